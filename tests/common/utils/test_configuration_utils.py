"""Stand-in for transformers' `tests/utils/test_configuration_utils.py` (not in the PyPI sdist).

`config_common_kwargs` is read only by `ConfigTester.check_config_arguments_init`, which returns before reading it
for composite configs (`config_class.sub_configs`); `CommerceMMConfig` is the only config the vendored
`ConfigTester` runs on, so no values are needed here."""

config_common_kwargs: dict = {}
