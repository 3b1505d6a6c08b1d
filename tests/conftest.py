pytest_plugins = ["intentus_trio.testing.pytest_plugin"]
