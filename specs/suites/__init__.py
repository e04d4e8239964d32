"""Unittest-style experiment specs: each experiment is a `unittest.TestCase`
(network, images, eps, domain, expected outcome). Run one with
`python -m unittest specs.suites.<name>`; see specs/suites/README.md."""
