"""What a probe reads off a generation in progress: the router's candidate features of B's prefix and the
features of A's own first steps (`features`)."""
