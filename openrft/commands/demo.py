"""``openrft demo``: the README's main job (see :mod:`openrft.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from openrft.demo.run import DEFAULT_MODEL, Demo, DemoOptions


def demo(args: argparse.Namespace) -> int:
    opts = DemoOptions(
        home=Path(args.demo_home),
        base_url=args.base_url,
        api_key=args.api_key,
        port=args.port,
        model=args.model,
        n_train=args.train,
        n_validation=args.validation,
        n_test=args.test,
        seed=args.seed,
        rl_steps=args.rl_steps,
        sft_epochs=args.sft_epochs,
        max_minutes=args.minutes,
        keep_running=args.keep_running,
    )
    return 0 if Demo(opts).run().ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoOptions()
    p = sub.add_parser(
        "demo",
        help="fine-tune a small model on a generated task and compare accuracy before and after",
        description="Starts the embedded service, writes a customer-message classification task, fine-tunes "
        f"{DEFAULT_MODEL} on it with OpenRFT, and asks the base and the fine-tuned model the held-out questions.",
    )
    p.add_argument("--home", dest="demo_home", default=str(d.home), help=f"service home (default ./{d.home})")
    p.add_argument("--port", type=int, help="port for the embedded service (default: a free one)")
    p.add_argument("--base-url", help="use this running service instead of starting one")
    p.add_argument(
        "--api-key", help="key for --base-url (default: $OPENRFT_API_KEY, then $OPENRFT_HOME/api_key)"
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--train", type=int, default=d.n_train, help="training questions")
    p.add_argument(
        "--validation",
        type=int,
        default=d.n_validation,
        help="validation questions (evaluated during training)",
    )
    p.add_argument(
        "--test", type=int, default=d.n_test, help="held-out questions for the before/after comparison"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--rl-steps", type=int, default=d.rl_steps)
    p.add_argument("--sft-epochs", type=int, default=d.sft_epochs)
    p.add_argument(
        "--minutes",
        type=float,
        default=d.max_minutes,
        help="a training budget: the job pauses after it (default none)",
    )
    p.add_argument("--keep-running", action="store_true", help="leave the service running at the end")
    p.set_defaults(func=demo)
