"""The execution list's date hierarchy, its dates found from the first and last execution rather than from every row."""

import copy
import datetime

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.utils import timezone

register = template.Library()


@register.inclusion_tag("admin/date_hierarchy.html")
def spanned_date_hierarchy(cl):
    """Django's date hierarchy, offering each year, month or day between the selection's first and last row.

    Django lists only the dates that have rows, with a DISTINCT that reads
    every row of the selection; two index seeks find its ends instead. A
    date between them without rows lists nothing.
    """
    spanned = copy.copy(cl)
    spanned.queryset = DateSpan(cl.queryset, cl.date_hierarchy)
    return date_hierarchy(spanned)


class DateSpan:
    """A queryset as the date hierarchy reads it: its first and last dates, and every one between."""

    def __init__(self, queryset, field_name):
        self.queryset = queryset
        self.field_name = field_name

    def aggregate(self, **first_and_last):
        """The first and last dates, which is all the hierarchy aggregates.

        Two ordered reads of one row each: SQLite reads MIN() and MAX() of
        one statement from every row.
        """
        dates = self.queryset.order_by().values_list(self.field_name, flat=True)
        return {
            "first": dates.order_by(self.field_name).first(),
            "last": dates.order_by(f"-{self.field_name}").first(),
        }

    def datetimes(self, field_name, kind):
        span = self.aggregate()
        if span["first"] is None:
            return []
        first, last = (timezone.localtime(span[end]) if timezone.is_aware(span[end]) else span[end] for end in span)
        return list(_every(kind, first, last))

    dates = datetimes


def _every(kind, first, last):
    """The starts of each year, month or day (``kind``) from ``first`` to ``last``."""
    if kind == "year":
        for year in range(first.year, last.year + 1):
            yield datetime.datetime(year, 1, 1)
    elif kind == "month":
        year, month = first.year, first.month
        while (year, month) <= (last.year, last.month):
            yield datetime.datetime(year, month, 1)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        day = datetime.datetime(first.year, first.month, first.day)
        while day.date() <= last.date():
            yield day
            day += datetime.timedelta(days=1)
