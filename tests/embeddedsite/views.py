from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from django_toosimple_q.models import TaskExec

from . import tasks

TASKS = {"quick": tasks.quick, "slow": tasks.slow}


def ping(request):
    """Touches no table: it answers before migrate too."""
    return HttpResponse("pong")


@csrf_exempt
@require_POST
def queue(request, task):
    """POST /queue/quick?key=K queues quick("K"), /queue/slow?key=K&seconds=S
    slow("K", seconds=S); answers the TaskExec's id."""
    kwargs = {"seconds": float(request.GET["seconds"])} if "seconds" in request.GET else {}
    execution = TASKS[task].queue(request.GET["key"], **kwargs)
    return JsonResponse({"id": execution.pk})


def state(request, pk):
    return JsonResponse({"state": get_object_or_404(TaskExec, pk=pk).state})
