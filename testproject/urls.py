from django.contrib import admin
from django.urls import path

from .demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("queue/", views.queue, name="queue"),
    path("admin/", admin.site.urls),
]
