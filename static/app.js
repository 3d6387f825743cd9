// Keysmith page behaviour that htmx does not cover.
