# server/appload.py - finding the WSGI app the `libgreen` command serves:
# MODULE:NAME, MODULE:FACTORY(), MODULE:FACTORY(ARGS) or MODULE (for
# MODULE:application), as gunicorn spells it.
#
# Runs in each worker, never in the master. Every way the app can fail to
# load - no such module, an error while importing it, no such name, a
# factory that raises, something that is not callable - becomes one
# AppError whose text is the one line the command prints: what failed,
# why, and where in the user's code.
#
# Embedded into libgreen_pyXY.so with cli.py (libgreen.appload).
# Comments only at the top: a string there would become the docstring.
import importlib as _importlib, os as _os


class AppError(Exception):
    'The app could not be loaded; str() is the line to print.'


def _where(exc):
    'Where exc was raised in the innermost frame, as " (at FILE:LINE)".'
    if isinstance(exc, SyntaxError) and exc.filename:
        return ' (at %s:%s)' % (exc.filename, exc.lineno)
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ''
    return ' (at %s:%d)' % (tb.tb_frame.f_code.co_filename, tb.tb_lineno)


def _why(exc):
    text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    text = str(text).strip().replace('\n', ' ')
    return '%s: %s' % (type(exc).__name__, text) if text else type(exc).__name__


def parse(spec):
    '''spec -> (module name, [attribute names], call) where call is None
    or (args, kwargs) of a factory call. Raises AppError.'''
    import ast as _ast
    module, sep, expr = spec.partition(':')
    if not sep:
        expr = 'application'
    if not module or not all(p.isidentifier() for p in module.split('.')):
        raise AppError('%r is not MODULE:NAME (e.g. myapp:app or '
                       'myapp:create_app())' % (spec,))
    try:
        node = _ast.parse(expr.strip(), mode='eval').body
    except SyntaxError:
        node = None
    call = None
    if isinstance(node, _ast.Call):
        try:
            call = ([_ast.literal_eval(a) for a in node.args],
                    {k.arg: _ast.literal_eval(k.value) for k in node.keywords})
        except ValueError:
            raise AppError('%r: the arguments of the factory must be Python '
                           'literals (strings, numbers, True ...)' % (spec,)) from None
        if any(k.arg is None for k in node.keywords):
            raise AppError('%r: ** is not allowed in the factory call' % (spec,))
        node = node.func
    names = []
    while isinstance(node, _ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    if not isinstance(node, _ast.Name):
        raise AppError('%r: after the colon give a name (app) or a factory '
                       'call (create_app() or create_app("prod"))' % (spec,))
    names.insert(0, node.id)
    return module, names, call


def _import(module):
    try:
        return _importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + '.')):
            raise AppError('cannot import %r: no module named %r in %s or on '
                           'PYTHONPATH (use --chdir to the app\'s directory)'
                           % (module, e.name, _os.getcwd())) from None
        raise AppError('importing %r failed: %s%s' % (module, _why(e), _where(e))) from None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise AppError('importing %r failed: %s%s' % (module, _why(e), _where(e))) from None


def load(spec):
    'The WSGI callable spec names (imported, and called if a factory).'
    module, names, call = parse(spec)
    obj = _import(module)
    for i, name in enumerate(names):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise AppError('%s has no attribute %r (APP is %r)' % (
                'module %r' % module if i == 0 else repr('.'.join([module] + names[:i])),
                name, spec)) from None
    if call is not None:
        if not callable(obj):
            raise AppError('%r: %s is a %s, not a factory to call' % (
                spec, '.'.join(names), type(obj).__name__))
        try:
            obj = obj(*call[0], **call[1])
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise AppError('%r raised %s%s' % (spec, _why(e), _where(e))) from None
    if not callable(obj):
        raise AppError('%r is a %s, not a WSGI app (a callable taking environ '
                       'and start_response)' % (spec, type(obj).__name__))
    return obj
