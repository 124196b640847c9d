"""Set-up shared by the tests and the docstring examples (`pytest --doctest-modules commercemm_hf`)."""


def pytest_configure(config):
    # DeepSpeed (installed for the multi-GPU recipes) prints its accelerator choice to stdout the first time it is
    # imported, which the first `save_pretrained` of a process does through accelerate. Imported here, that line is
    # printed once before any test runs instead of inside whichever docstring example saves a model first.
    if config.getoption("doctestmodules", False):
        try:
            import deepspeed  # noqa: F401
        except Exception:  # not installed, or unusable on this machine: nothing to pre-empt
            pass
