"""libgreen is not an ordinary Python package: it lives inside the
preloaded libgreen.so. Finding this file means Python was started without
the preload, so say how to start it instead of failing obscurely."""
raise ImportError(
    "libgreen works only when preloaded: start the program as\n"
    "    LD_PRELOAD=/path/to/libgreen/build/libgreen.so python3 app.py\n"
    "(build it with 'make' in the libgreen checkout)"
)
