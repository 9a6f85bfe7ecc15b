from django.urls import path

from . import views

urlpatterns = [
    path("ping", views.ping),
    path("queue/<str:task>", views.queue),
    path("state/<int:pk>", views.state),
]
