from django.test import SimpleTestCase, override_settings

from django_toosimple_q import conf


class ConfTests(SimpleTestCase):
    def test_a_setting_left_out_reads_as_its_default(self):
        self.assertEqual(conf.MAX_INTERRUPTIONS, conf.DEFAULTS["TOOSIMPLEQ_MAX_INTERRUPTIONS"])

    def test_a_value_kept_from_an_earlier_read_follows_override_settings(self):
        self.assertIsNone(conf.TASK_TIMEOUT)  # read once, and kept
        with override_settings(TOOSIMPLEQ_TASK_TIMEOUT=7):
            self.assertEqual(conf.TASK_TIMEOUT, 7)
            with override_settings(TOOSIMPLEQ_TASK_TIMEOUT=8):
                self.assertEqual(conf.TASK_TIMEOUT, 8)
            self.assertEqual(conf.TASK_TIMEOUT, 7)
        self.assertIsNone(conf.TASK_TIMEOUT)

    def test_an_unknown_setting_is_an_attribute_error(self):
        with self.assertRaisesMessage(AttributeError, "no setting TOOSIMPLEQ_NO_SUCH_THING"):
            conf.NO_SUCH_THING
