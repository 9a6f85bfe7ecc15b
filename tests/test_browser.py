"""The admin in a real browser: headless Chromium, driven by Selenium, on a live server.

Where the browser cannot start the tests skip with the reason, except in CI
(CI=true), where that is a failure. Each step saves a screenshot into
SCREENSHOTS_DIR (TOOSIMPLEQ_SCREENSHOTS_DIR, default .tmp/screenshots),
which the tests print.
"""

import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

from django.contrib.auth.models import User
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.urls import reverse

from django_toosimple_q.models import ScheduleExec, TaskExec
from django_toosimple_q.registry import Schedule, Task, register, register_schedule

from .helpers import REPO_DIR, IsolatedRegistries
from .test_schedules import greet

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCREENSHOTS_DIR = Path(os.environ.get("TOOSIMPLEQ_SCREENSHOTS_DIR", REPO_DIR / ".tmp" / "screenshots"))

# What lets Chromium start in a container and stay off the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
]

States = TaskExec.States


def start_chromium(profile_dir):
    """A headless Chromium under chromedriver, or an exception that says why not."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        raise RuntimeError("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    # The driver given explicitly: Selenium would otherwise look for one online.
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


class AdminInABrowserTests(IsolatedRegistries, StaticLiveServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.profile_dir = tempfile.mkdtemp(prefix="toosimpleq-chromium-")
        try:
            cls.browser = start_chromium(cls.profile_dir)
        except Exception as error:
            shutil.rmtree(cls.profile_dir, ignore_errors=True)
            super().tearDownClass()
            if IN_CI:
                raise
            raise unittest.SkipTest(f"no headless Chromium: {error}") from None
        cls.browser.implicitly_wait(15)
        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
        print(f"\nscreenshots of the admin: {SCREENSHOTS_DIR}", file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        shutil.rmtree(cls.profile_dir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        User.objects.create_superuser("admin", password="a-password")
        register(Task(greet, name="browser.greet"))
        register_schedule(Schedule(register(Task(greet, name="browser.by_hand")), "manual", name="browser.by_hand"))
        ScheduleExec.objects.create(name="browser.by_hand", task_name="browser.by_hand", cron="manual")
        self.failed = TaskExec.objects.create(task_name="browser.greet", args=["Ada"], state=States.FAILED, error="ValueError: no")
        self.waiting = TaskExec.objects.create(task_name="browser.greet", args=["Bob"], state=States.QUEUED)
        self.succeeded = TaskExec.objects.create(
            task_name="browser.greet", args=["Cy"], state=States.SUCCEEDED, stdout="Hello from the task\nsecond line"
        )
        self.log_in()

    def open(self, url_name, *args, query=""):
        self.browser.get(f"{self.live_server_url}{reverse(url_name, args=args)}{query}")

    def screenshot(self, name):
        self.browser.save_screenshot(str(SCREENSHOTS_DIR / f"{name}.png"))

    def find(self, selector):
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.CSS_SELECTOR, selector)

    def texts(self, selector):
        from selenium.webdriver.common.by import By

        return [element.text for element in self.browser.find_elements(By.CSS_SELECTOR, selector)]

    def log_in(self):
        self.open("admin:login")
        self.find("#id_username").send_keys("admin")
        self.find("#id_password").send_keys("a-password")
        self.find("input[type=submit]").click()
        # The login page has a #site-name too: wait for what only a signed-in page shows.
        self.find("#user-tools")

    def run_action(self, action, rows):
        from selenium.webdriver.support.select import Select

        for row in rows:
            self.find(f'input.action-select[value="{row.pk}"]').click()
        Select(self.find("select[name=action]")).select_by_value(action)
        self.find("button[name=index]").click()
        return self.texts(".messagelist li")

    def test_an_operator_session(self):
        self.open("admin:toosimpleq_taskexec_changelist")
        self.assertEqual(len(self.texts("#result_list tbody tr")), 3)
        self.screenshot("01-executions")

        self.find('#changelist-filter a[href*="state__exact=FAILED"]').click()
        self.assertEqual(self.texts("#result_list tbody .field-state_badge"), ["Failed"])
        self.screenshot("02-executions-failed")

        messages = self.run_action("action_requeue", [self.failed])
        self.assertEqual(len(messages), 1)
        self.assertIn("Requeued as new executions (1)", messages[0])
        self.assertEqual(TaskExec.objects.filter(task_name="browser.greet", state=States.QUEUED).count(), 2)
        self.screenshot("03-requeued")

        self.open("admin:toosimpleq_taskexec_changelist")
        messages = self.run_action("action_cancel", [self.waiting])
        self.assertIn("Cancelled (1)", messages[0])
        self.waiting.refresh_from_db()
        self.assertEqual(self.waiting.state, States.CANCELLED)
        self.screenshot("04-cancelled")

        self.open("admin:toosimpleq_scheduleexec_changelist")
        messages = self.run_action("action_force_run", [ScheduleExec.objects.get()])
        self.assertIn("Queued now (1)", messages[0])
        self.assertTrue(TaskExec.objects.filter(task_name="browser.by_hand").exists())
        self.screenshot("05-schedule-run-now")

        self.open("admin:toosimpleq_taskexec_change", self.succeeded.pk)
        stdout = self.find(".field-stdout_text pre")
        self.assertEqual(stdout.text, "Hello from the task\nsecond line")
        self.browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", stdout)
        self.screenshot("06-execution-detail")

        self.open("admin:index")
        self.find('a[href$="/toosimpleq/queueoverview/"]').click()
        self.assertEqual(self.texts("#toosimpleq-queues tbody th"), ["default"])
        self.screenshot("07-overview")

        self.open("admin:toosimpleq_workerstatus_changelist")
        self.screenshot("08-workers")
