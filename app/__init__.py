"""ToV Select HTTP API. Stateless; never imports torch: jobs go to the workers by task name."""
