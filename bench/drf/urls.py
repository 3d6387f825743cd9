# The whoami endpoint of the comparison: the user behind the token.
from django.urls import path
from rest_framework.decorators import api_view
from rest_framework.response import Response


@api_view(["GET"])
def whoami(request):
    user = request.user
    return Response({"user": {"id": user.id, "email": user.email}, "token": request.auth.key[:8]})


urlpatterns = [path("api/whoami", whoami)]
