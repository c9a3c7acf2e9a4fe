"""BUILD stays in step with the Python files and their imports."""

import os
import subprocess
import sys

from keras_learndrop.backend import tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BuildTest(tf.test.TestCase):
    def test_build_file_matches_the_files_on_disk(self):
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "scripts", "build_gen.py"),
                "--check",
            ],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_every_module_and_test_has_a_target(self):
        build = open(os.path.join(ROOT, "BUILD")).read()
        for package in ("keras_learndrop", "examples", "tests"):
            for name in os.listdir(os.path.join(ROOT, package)):
                if name.endswith(".py") and name != "__init__.py":
                    self.assertIn(f'srcs = ["{package}/{name}"]', build)
        self.assertIn('py_test(\n    name = "callback_test"', build)
        self.assertIn(
            'deps = [\n        ":backend",', build.split('name = "graph"')[1]
        )


if __name__ == "__main__":
    tf.test.main()
