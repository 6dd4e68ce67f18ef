"""`python -m experiments.label --workdir DIR`: the labeling page for a run (see hybrid_jax.labeling).

Serves http://HOST:PORT/ where a person compares two images of each seed and answers with the keyboard.
`--compare binary` (default): Model A's and Model B's image; labels go to DIR/labels/human.csv, which the
router stage reads. `--compare options`: the allocation study's reference (A at its full budget) beside
each other option in turn; labels go to DIR/labels/human_options.csv (one row per seed and option), which
the allocate stage reads.
Only the page itself may use the server: requests naming another host or sent from another web page
are refused (403), so open it at the printed address (or a localhost spelling of it), or allow another
name with --allow-host (e.g. localhost:8080 behind an SSH tunnel). Needs Flask: pip install -e ".[label]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.label", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="run directory holding seeds/seeds.npz")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--seed", type=int, default=0, help="run seed of the random left/right order (default 0)")
    p.add_argument("--compare", choices=("binary", "options"), default="binary",
                   help="binary: A vs B per seed (the router's labels); options: the reference option vs every "
                        "other option of the allocate stage (the allocation's labels). Default binary")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="also accept requests for this host name (repeatable), e.g. localhost:8080 behind "
                        "an SSH tunnel; by default only the address served (and its localhost spellings)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hybrid_jax import labeling

    try:  # flask is an extra: say what to install instead of a traceback
        labeling.require_flask()
    except labeling.FlaskMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from werkzeug.serving import make_server

    workdir = Path(args.workdir)
    source = labeling.SOURCES[args.compare]
    store = labeling.LabelStore(workdir, source.name, source.key)
    try:  # fail before serving when the inputs are unusable
        seeds = source.load(workdir, ())
        snap = store.read(seeds)
    except labeling.ApiError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    try:
        app = labeling.create_app(workdir, seed=args.seed, allowed_hosts=[args.host, *args.allow_host],
                                  source=source)
    except ValueError as e:  # a malformed --allow-host
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}). "
              "Pick another --port (0 = any free port).", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    what = f"{len(seeds.seeds)} seeds" + (f" x {len(seeds.candidates)} options vs {seeds.reference}"
                                          if len(seeds.candidates) > 1 else "")
    print(f"labeling {what} ({len(snap.labels)} labeled) -> {store.csv}")
    print(f"open http://{host}:{server.server_port}/  (Ctrl+C stops; every answer is saved at once)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
