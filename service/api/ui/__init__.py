"""The web console (/ui): review triples, see what the conscience does, manage adapters."""
