"""Checks that the versions setup.cfg claims are the versions tested.

`scripts/test_versions.sh` runs the suite against the pairs of
`scripts/version_matrix.txt`; the lower bounds of setup.cfg must be the
oldest pair's versions, and every pair must lie in setup.cfg's ranges.
"""

import configparser
import os
import re

from absl.testing import parameterized

from keras_learndrop.backend import tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version(text):
    """`"3.10"` -> `(3, 10, 0)`: three parts, so that bounds compare."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def _matrix():
    pairs = {}
    with open(os.path.join(ROOT, "scripts", "version_matrix.txt")) as file:
        for line in file:
            if line.strip() and not line.startswith("#"):
                name, *requirements = line.split()
                pairs[name] = dict(
                    re.fullmatch(r"([\w\-]+)==([\d.]+)", r).groups()
                    for r in requirements
                    if "==" in r
                )
    return pairs


def _bounds():
    """`{package: (lower, upper)}` of setup.cfg's requirements."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    lines = config["options"]["install_requires"].split("\n")
    lines += config["options.extras_require"]["cpu"].split("\n")
    bounds = {}
    for line in filter(None, (x.strip() for x in lines)):
        match = re.fullmatch(r"([\w\-]+)>=([\d.]+),<([\d.]+)", line)
        if match:
            name, low, high = match.groups()
            bounds[name] = (_version(low), _version(high))
    return bounds


class VersionMatrixTest(tf.test.TestCase, parameterized.TestCase):
    def test_lower_bounds_are_the_oldest_pair(self):
        oldest = _matrix()["oldest"]
        bounds = _bounds()
        for package in ("keras", "tensorflow-cpu"):
            self.assertEqual(
                bounds[package][0],
                _version(oldest[package]),
                f"setup.cfg's lower bound of {package} is not the version "
                "that scripts/version_matrix.txt tests",
            )

    @parameterized.named_parameters(("oldest", "oldest"), ("newest", "newest"))
    def test_each_pair_is_in_the_claimed_ranges(self, name):
        bounds = _bounds()
        for package, version in _matrix()[name].items():
            if package in bounds:
                low, high = bounds[package]
                self.assertGreaterEqual(_version(version), low)
                self.assertLess(_version(version), high)


if __name__ == "__main__":
    tf.test.main()
