# Seeds the comparison database: COUNT users with one DRF token each, and
# writes SAMPLE of the tokens to OUT, one per line (as bench_seed does).
#   python seed.py COUNT OUT SAMPLE
import os
import random
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

count, out, sample = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
call_command("migrate", verbosity=0)
keys = []
batch = 5000
for start in range(0, count, batch):
    users = User.objects.bulk_create(
        User(username=f"user{n}", email=f"user{n}@example.com", password="!")
        for n in range(start, min(count, start + batch))
    )
    tokens = [Token(key=Token.generate_key(), user=u) for u in users]
    Token.objects.bulk_create(tokens)
    keys.extend(t.key for t in tokens)
with open(out, "w") as f:
    f.write("\n".join(random.sample(keys, min(sample, len(keys)))) + "\n")
print(f"drf seed: {count} tokens, {min(sample, len(keys))} written to the sample file")
