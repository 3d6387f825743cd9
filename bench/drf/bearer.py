# TokenAuthentication reading the same `Authorization: Bearer <token>`
# header Keysmith reads (DRF's default keyword is "Token").
from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"
