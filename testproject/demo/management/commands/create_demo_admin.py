from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo's superuser, admin (password: admin), unless it exists. For the demo only."

    def handle(self, *args, **options):
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", password="admin")
        self.stdout.write("The demo: http://127.0.0.1:8000/ (admin: http://127.0.0.1:8000/admin/, admin / admin)")
