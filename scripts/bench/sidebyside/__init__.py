"""sidebyside - `make bench`: libgreen next to the Debian-packaged WSGI
servers on one machine (scripts/bench/side-by-side runs main.main)."""
