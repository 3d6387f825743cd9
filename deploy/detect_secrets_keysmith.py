"""detect-secrets plugin for Keysmith personal API tokens.

Use:  detect-secrets scan -p deploy/detect_secrets_keysmith.py [paths...]

A Keysmith token reads <prefix>_<30 base62 random><6 base62 CRC32>, e.g.
ks_1a2B3c...; the last six characters are the CRC32 of everything before
them, written in base62 (0-9A-Za-z, most significant digit first, zero
padded). This plugin matches the shape and then checks that checksum, so
random strings that merely look like a token are not reported.

The prefix is "ks" unless the deployment sets KEYSMITH_TOKEN_PREFIX; set the
same variable when scanning (or edit PREFIX below).
"""
import os
import re
import zlib

from detect_secrets.plugins.base import RegexBasedDetector

PREFIX = os.environ.get("KEYSMITH_TOKEN_PREFIX", "ks")

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LEN = 30
CHECKSUM_LEN = 6


def _checksum(covered: str) -> str:
    value = zlib.crc32(covered.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LEN):
        digits.append(ALPHABET[value % 62])
        value //= 62
    return "".join(reversed(digits))


def is_keysmith_token(candidate: str) -> bool:
    """True when the candidate's last six characters are its checksum."""
    covered, checksum = candidate[:-CHECKSUM_LEN], candidate[-CHECKSUM_LEN:]
    return _checksum(covered) == checksum


class KeysmithTokenDetector(RegexBasedDetector):
    """Scans for Keysmith personal API tokens (checksum-verified)."""

    secret_type = "Keysmith API Token"

    denylist = [
        # Not preceded by a letter, digit or '_' (so "my_ks_..." is not a
        # ks token) and not followed by a letter or digit (so a longer
        # run is not one either).
        re.compile(
            r"(?<![0-9A-Za-z_])(" + re.escape(PREFIX) + r"_[0-9A-Za-z]{"
            + str(RANDOM_LEN + CHECKSUM_LEN) + r"})(?![0-9A-Za-z])"
        ),
    ]

    def analyze_string(self, string):
        for candidate in super().analyze_string(string):
            if is_keysmith_token(candidate):
                yield candidate
