"""sidebyside/scale.py - more than one core: worker processes.

On this 2-core machine: libgreen's command with --workers 1 and 2 (one
listening socket shared by the workers), with --workers 2 --reuse-port
(the master binds one SO_REUSEPORT socket per worker on the same port),
and gunicorn's gevent worker x1 and x2. Nothing is pinned and wrk (two
threads) shares the cores, as a real 2-core host would run them. Besides
req/s it records how the connections and the CPU time spread over the
workers: the accept balance that decides how far the design goes on 64
cores.
"""
import os

from . import load, procs, runner

CONNS = 100


def configs(plan, target, port):
    """(name, workers, argv, extra env) of each configuration."""
    lg = os.path.join(plan.root, "build", "libgreen")
    gun = ["gunicorn", "-k", "gevent", "--worker-connections", "10000",
           "-b", "127.0.0.1:%d" % port, "--backlog", "4096", "--log-level", "warning"]
    cmd = [lg, "--allow-root", "--no-log-output", "--max-size", "10000",
           "--backlog", "4096", "-b", "127.0.0.1:%d" % port]
    return [
        ("libgreen --workers 1", 1, cmd + ["--workers", "1", target], {}),
        ("libgreen --workers 2", 2, cmd + ["--workers", "2", target], {}),
        ("libgreen --workers 2 --reuse-port", 2,
         cmd + ["--workers", "2", "--reuse-port", target], {}),
        ("gunicorn gevent -w 1", 1, gun + ["-w", "1", target], {}),
        ("gunicorn gevent -w 2", 2, gun + ["-w", "2", target], {}),
    ]


def _workers(root_pid, per_cpu):
    """The serving processes: every process of the tree but the root (the
    master)."""
    pids = [p for p in per_cpu if p != root_pid]
    return pids or [root_pid]


def measure(plan, name, argv, extra, tmp, log, port, seconds):
    proc = procs.spawn(argv, runner._env(extra, tmp, None), tmp, None, log)
    try:
        if not procs.wait_ready(proc, port):
            return {"failed": "%s did not start: %s" % (name, runner._tail(log))}
        sampler = procs.Sampler(proc.pid)
        load.run(port, CONNS, plan.warmup, 5, None, log, threads=2)
        res = load.run(port, CONNS, seconds, 5, None, log, threads=2, sampler=sampler)
        workers = _workers(proc.pid, res["per_process_cpu"])
        cpu = [res["per_process_cpu"][p] for p in workers]
        res["worker_cpu_share"] = [c / sum(cpu) if sum(cpu) else 0 for c in cpu]
        # sockets of a worker = its connections + the listening socket
        # (the shared one, or with --reuse-port its own)
        res["worker_conns"] = [max(0, sampler.sockets.get(p, 0) - 1) for p in workers]
        res.pop("per_process_cpu", None)
        return res
    except RuntimeError as e:
        return {"failed": str(e)}
    finally:
        procs.stop(proc)


def run(plan, tmp, record):
    seconds = 2 if plan.quick else 5
    for rnd in range(1, plan.runs + 1):
        for i in range(len(configs(plan, "", 0))):
            port = procs.free_port()
            name, nworkers, argv, extra = configs(plan, "benchapps:plain", port)[i]
            log = os.path.join(plan.out, "logs", "scale-%s-%d.log" % (
                name.replace(" ", "_").replace(",", "").replace("-", ""), rnd))
            res = measure(plan, name, argv, extra, tmp, log, port, seconds)
            res.update({"config": name, "workers": nworkers, "round": rnd, "conns": CONNS})
            record(res)
            print("[scale %d/%d] %-33s %s  conns/worker %s"
                  % (rnd, plan.runs, name, runner.summary(res), res.get("worker_conns")),
                  flush=True)
