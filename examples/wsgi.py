# wsgi.py - the app module itself is not changed
import libgreen
from hello import create_app

app = create_app()
libgreen.wsgi.server(libgreen.listen(("127.0.0.1", 8000)), app)
