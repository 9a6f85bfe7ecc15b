from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from django_toosimple_q.models import TaskExec, WorkerStatus

from .tasks import queue_demo_tasks


def index(request):
    """The latest executions and the running workers; the page reloads itself."""
    return render(
        request,
        "demo/index.html",
        {
            "executions": TaskExec.objects.order_by("-id")[:25],
            "workers": [
                worker
                for worker in WorkerStatus.objects.filter(stopped=None)
                if worker.state == WorkerStatus.States.ONLINE
            ],
        },
    )


@require_POST
def queue(request):
    queue_demo_tasks()
    # Redirected, so that the page's reloads do not post again.
    return redirect("index")
