"""contrib.mail: queued email sent by a worker through the real backend, stored as JSON."""

import datetime
import email.message
import email.mime.text
import smtplib
from email.mime.base import MIMEBase
from unittest import mock, skipIf

import django

from django.core import checks, mail
from django.core.mail import EmailMessage, EmailMultiAlternatives, send_mail, send_mass_mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db import DatabaseError
from django.test import SimpleTestCase, TransactionTestCase, modify_settings, override_settings
from django.utils import timezone

from django_toosimple_q.contrib.mail import message_from_data, message_to_data
from django_toosimple_q.contrib.mail.tasks import send_email
from django_toosimple_q.models import TaskExec
from django_toosimple_q.worker import Worker

States = TaskExec.States
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
PNG = b"\x89PNG\r\n\x1a\n\x00\xff binary"


class FailingBackend(LocmemBackend):
    """The real backend of a mail server that is down."""

    def send_messages(self, messages):
        raise smtplib.SMTPServerDisconnected("the server is down")


def run_worker():
    Worker(until_done=True, schedules=False).run()


def full_message():
    """A message using every field the queue must keep."""
    message = EmailMultiAlternatives(
        "Subject é",
        "Plain body",
        "from@example.com",
        ["to@example.com"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to=["reply@example.com"],
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:stop@example.com>"},
    )
    message.attach_alternative("<p>HTML body</p>", "text/html")
    message.attach("notes.txt", "some text", "text/plain")
    message.attach("logo.png", PNG, "image/png")
    return message


def sent_fields(message):
    return {
        "class": type(message),
        "subject": message.subject,
        "body": message.body,
        "from_email": message.from_email,
        "to": message.to,
        "cc": message.cc,
        "bcc": message.bcc,
        "reply_to": message.reply_to,
        "headers": message.extra_headers,
        "alternatives": [tuple(alternative) for alternative in getattr(message, "alternatives", [])],
        "attachments": [tuple(attachment) for attachment in message.attachments],
        "content_subtype": message.content_subtype,
    }


@override_settings(
    EMAIL_BACKEND="django_toosimple_q.contrib.mail.backend.QueueBackend", TOOSIMPLEQ_EMAIL_BACKEND=LOCMEM
)
class QueuedMailTests(TransactionTestCase):
    def setUp(self):
        mail.outbox = []

    def test_send_mail_is_queued_then_sent_by_a_worker(self):
        self.assertEqual(send_mail("Hello", "Body", "from@example.com", ["to@example.com"]), 1)
        execution = TaskExec.objects.get()
        self.assertEqual((execution.task_name, execution.state), (send_email._task.name, States.QUEUED))
        self.assertEqual(mail.outbox, [])
        run_worker()
        execution.refresh_from_db()
        self.assertEqual((execution.state, execution.result), (States.SUCCEEDED, 1))
        [sent] = mail.outbox
        self.assertEqual((sent.subject, sent.body, sent.to), ("Hello", "Body", ["to@example.com"]))

    def test_send_mass_mail_queues_one_task_per_message(self):
        sent = send_mass_mail(
            [(f"Subject {letter}", "Body", "from@example.com", [f"{letter}@example.com"]) for letter in "ABC"]
        )
        self.assertEqual(sent, 3)
        self.assertEqual(TaskExec.objects.count(), 3)
        run_worker()
        self.assertEqual(sorted(message.subject for message in mail.outbox), ["Subject A", "Subject B", "Subject C"])

    def test_every_field_survives_the_queue(self):
        message = full_message()
        expected = sent_fields(message)
        message.send()
        stored = TaskExec.objects.get().args
        # JSON: nothing pickled, the binary attachment in base64.
        self.assertEqual(stored[0][0]["attachments"][1]["mimetype"], "image/png")
        self.assertIn("content_base64", stored[0][0]["attachments"][1])
        run_worker()
        [sent] = mail.outbox
        self.assertEqual(sent_fields(sent), expected)
        self.assertEqual(sent.recipients(), ["to@example.com", "cc@example.com", "bcc@example.com"])
        rendered = sent.message()
        self.assertEqual(rendered["X-Campaign"], "spring")
        self.assertEqual(rendered["Reply-To"], "reply@example.com")
        self.assertIn(b"<p>HTML body</p>", rendered.as_bytes())

    def test_an_identical_message_still_waiting_is_not_queued_twice(self):
        self.assertEqual(send_mail("Hello", "Body", "from@example.com", ["to@example.com"]), 1)
        self.assertEqual(send_mail("Hello", "Body", "from@example.com", ["to@example.com"]), 0)
        run_worker()
        self.assertEqual(len(mail.outbox), 1)

    def test_an_upstream_shaped_call_of_several_messages_sends_them_all(self):
        messages = [EmailMessage(f"Subject {i}", "Body", "from@example.com", ["to@example.com"]) for i in range(3)]
        send_email.queue([message_to_data(message) for message in messages])
        run_worker()
        self.assertEqual([message.subject for message in mail.outbox], ["Subject 0", "Subject 1", "Subject 2"])
        self.assertEqual(TaskExec.objects.get().result, 3)

    def test_a_failing_backend_retries_the_message_until_it_is_sent(self):
        with override_settings(TOOSIMPLEQ_EMAIL_BACKEND=f"{__name__}.FailingBackend"):
            send_mail("Hello", "Body", "from@example.com", ["to@example.com"])
            run_worker()
        failed = TaskExec.objects.get(state=States.FAILED)
        self.assertIn("the server is down", failed.error)
        retry = failed.replaced_by
        self.assertEqual((retry.state, retry.attempt, retry.retries), (States.SLEEPING, 2, 9))
        self.assertEqual(retry.args, failed.args)
        self.assertEqual(mail.outbox, [])
        # The server is back when the retry is due.
        TaskExec.objects.filter(pk=retry.pk).update(due=timezone.now() - datetime.timedelta(seconds=1))
        run_worker()
        retry.refresh_from_db()
        self.assertEqual(retry.state, States.SUCCEEDED)
        self.assertEqual([message.subject for message in mail.outbox], ["Hello"])

    def test_a_message_that_cannot_be_stored_is_refused_unless_fail_silently(self):
        good = EmailMessage("Good", "Body", "from@example.com", ["to@example.com"])
        bad = EmailMessage("Bad", "Body", "from@example.com", ["to@example.com"])
        bad.attachments.append(("data.bin", 12345, "application/octet-stream"))
        with self.assertRaisesMessage(TypeError, "content of type int cannot be queued"):
            mail.get_connection().send_messages([good, bad])
        self.assertFalse(TaskExec.objects.exists())
        self.assertEqual(mail.get_connection(fail_silently=True).send_messages([good, bad]), 1)
        self.assertEqual(TaskExec.objects.get().args[0][0]["subject"], "Good")

    def test_a_database_error_queues_nothing_and_is_silenced_only_with_fail_silently(self):
        message = EmailMessage("Hello", "Body", "from@example.com", ["to@example.com"])
        with mock.patch.object(send_email, "queue_many", side_effect=DatabaseError("the database is down")):
            with self.assertRaises(DatabaseError):
                mail.get_connection().send_messages([message])
            self.assertEqual(mail.get_connection(fail_silently=True).send_messages([message]), 0)


class MessageDataTests(SimpleTestCase):
    def round_trip(self, message):
        return message_from_data(message_to_data(message))

    def test_a_plain_message_comes_back_as_an_email_message(self):
        message = EmailMessage("Subject", "Body", "from@example.com", ["to@example.com"], headers={"X-Id": "7"})
        again = self.round_trip(message)
        self.assertIs(type(again), EmailMessage)
        self.assertEqual(sent_fields(again), sent_fields(message))

    def test_a_mime_part_attachment_keeps_its_bytes(self):
        message = EmailMessage("Subject", "Body", "from@example.com", ["to@example.com"])
        part = email.mime.text.MIMEText("inline part", "plain")
        part["Content-Disposition"] = 'attachment; filename="part.txt"'
        message.attachments.append(part)
        [again] = self.round_trip(message).attachments
        self.assertEqual(again.as_bytes(), part.as_bytes())
        # What this Django takes without a deprecation warning.
        self.assertIsInstance(again, email.message.MIMEPart if django.VERSION >= (6, 0) else MIMEBase)
        self.assertIn(b"inline part", self.round_trip(message).message().as_bytes())

    def test_a_message_attachment_is_kept_as_the_message(self):
        inner = EmailMessage("Inner", "Forwarded body", "a@example.com", ["b@example.com"])
        message = EmailMessage("Outer", "Body", "from@example.com", ["to@example.com"])
        message.attach(None, inner, "message/rfc822")
        rendered = self.round_trip(message).message().as_bytes()
        self.assertIn(b"Forwarded body", rendered)
        self.assertIn(b"Subject: Inner", rendered)

    def test_text_subtypes_and_encoding_are_kept(self):
        message = EmailMessage("Subject", "<b>Body</b>", "from@example.com", ["to@example.com"])
        message.content_subtype = "html"
        message.encoding = "iso-8859-1"
        again = self.round_trip(message)
        self.assertEqual((again.content_subtype, again.encoding), ("html", "iso-8859-1"))
        self.assertEqual(again.message().get_content_type(), "text/html")

    def test_a_message_pickled_by_an_older_django_is_taken(self):
        # What unpickling an upstream 1.x row gives: an instance dict of that
        # time, without the fields a newer Django added, tuples for attachments.
        message = EmailMessage.__new__(EmailMessage)
        message.__dict__.update(
            subject="Old",
            body="Old body",
            from_email="from@example.com",
            to=["to@example.com"],
            bcc=[],
            attachments=[("old.txt", "old text", "text/plain")],
            extra_headers={},
            connection=None,
        )
        again = self.round_trip(message)
        self.assertEqual((again.subject, again.cc, again.reply_to), ("Old", [], []))
        self.assertEqual([tuple(attachment) for attachment in again.attachments], [("old.txt", "old text", "text/plain")])
        self.assertIn(b"old text", again.message().as_bytes())

    @skipIf(django.VERSION >= (6, 0), "Django 6 has no mixed_subtype")
    def test_the_mixed_subtype_is_kept(self):
        message = EmailMessage("Subject", "Body", "from@example.com", ["to@example.com"])
        message.mixed_subtype = "related"
        message.attach("notes.txt", "some text", "text/plain")
        self.assertEqual(self.round_trip(message).message().get_content_type(), "multipart/related")


class MailAppCheckTests(SimpleTestCase):
    def warnings(self):
        return [message.id for message in checks.run_checks(tags=["toosimpleq"]) if message.id == "toosimpleq.W003"]

    @override_settings(EMAIL_BACKEND="django_toosimple_q.contrib.mail.backend.QueueBackend")
    def test_the_queue_backend_without_its_app_is_warned_of(self):
        self.assertEqual(self.warnings(), [])
        with modify_settings(INSTALLED_APPS={"remove": ["django_toosimple_q.contrib.mail"]}):
            self.assertEqual(self.warnings(), ["toosimpleq.W003"])

    @modify_settings(INSTALLED_APPS={"remove": ["django_toosimple_q.contrib.mail"]})
    def test_another_backend_needs_no_app(self):
        self.assertEqual(self.warnings(), [])
