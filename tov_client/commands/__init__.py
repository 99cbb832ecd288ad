"""The ``tov`` command groups, one module per role; ``tov_client.cli`` assembles them."""
