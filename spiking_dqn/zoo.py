"""rl-zoo's ``train`` with the spiking settings kept: ``python -m spiking_dqn.zoo train ARGS``.

Why: rl_zoo3 2.9's ``-optimize`` builds each trial's model from the file's hyperparameters
updated with its DQN sampler's output, and that sampler (``sample_dqn_params`` ->
``convert_offpolicy_params``) returns a new ``policy_kwargs`` that holds only the sampled
``net_arch``. The file's spiking options (``ticks``, ``obs_bound``, ``beta``, ``threshold``, ...)
are dropped without a word: an Acrobot-v1 trial of ``zoo_configs/dqn.yml`` trains 10 ticks
instead of 20, with the space's encoder bounds instead of the file's.

What: ``python -m spiking_dqn.zoo train`` takes rl-zoo's train arguments unchanged
(``python -m rl_zoo3.train --help``) and runs rl-zoo's own entry, ``rl_zoo3.train.train()``.
Without ``-optimize`` that is plain rl-zoo. With ``-optimize --algo dqn`` each trial's
``policy_kwargs`` are merged instead of replaced (:func:`trial_policy_kwargs`):

* the file's ``policy_kwargs`` are kept, every key of them, ``net_arch`` included: the
  hidden widths belong to the recipe as much as the ticks and the bounds do (rl-zoo's
  ``small``/``medium``/``big`` are MLP sizes, up to 400-300 neurons, chosen without the chip's
  costs in mind). rl-zoo's sampled ``net_arch`` applies only where the file sets none, or
  with ``--zoo-net-arch``;
* with ``--spiking-space`` the trial also samples the spiking options over the file's values,
  in the tuner's search space (:func:`sample_spiking_options`: hidden widths, ticks, beta,
  threshold, encoding, a scale of the encoder bounds, ASPEN noise, activity penalty);
* every trial records the ``policy_kwargs`` its model was built with as the user attribute
  ``policy_kwargs`` (rl-zoo prints the best trial's, and its report csv lists them); rl-zoo's
  ``--storage S --study-name N --trial-id I`` trains with them (:func:`stored_trial_hyperparams`).

How: through rl-zoo's extension points: a subclass of its ``ExperimentManager`` installs
the merging sampler in ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` for the study. Only
handing the subclass to ``train()`` needs a patch (:func:`_rl_zoo_with`); the test
``tests/test_zoo.py`` fails when an rl_zoo3 release changes what it relies on.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

#: The rl_zoo3 release the patch of :func:`_rl_zoo_with` targets (2.9.2 tested).
RL_ZOO_TARGET = "2.9"
#: How the command names itself in rl-zoo's usage line and in the study's ``command`` attribute.
PROG = "python -m spiking_dqn.zoo"
#: The parameters of the tuner's space (:mod:`spiking_dqn.tune.space`) that ``--spiking-space``
#: samples: the spiking options; not rl-zoo's DQN ones (its own sampler's) nor the chip's weight widths.
SPIKING_PARAMS = (
    "ticks", "hidden_layers", "hidden_width", "threshold", "beta", "encoding", "obs_scale", "aspen_noise",
    "activity_penalty",
)

#: rl-zoo's sampler signature: (trial, n_actions, n_envs, additional_args) -> hyperparameters.
Sampler = Callable[[Any, int, int, dict], dict[str, Any]]


class ZooUsageError(Exception):
    """A wrong command line: printed as ``error: ...`` with exit status 2."""


@dataclass(frozen=True)
class ZooOptions:
    """The wrapper's own options, flags whose help their fields carry (the rest of the command line is rl-zoo's).

    (Not through ``spiking_dqn.cli.arguments.add_options``: importing ``spiking_dqn.cli`` loads
    every command of ``spiking-dqn``, which rl-zoo's entry does not need.)
    """

    spiking_space: bool = field(default=False, metadata={"help": (
        "also sample the spiking options over the file's, in the search space of spiking-dqn tune: hidden widths, "
        "ticks, beta, threshold, encoding, a scale of the encoder bounds, ASPEN noise, activity penalty"
    )})
    zoo_net_arch: bool = field(default=False, metadata={"help": (
        "apply rl-zoo's sampled net_arch (small/medium/big) over the file's hidden widths"
    )})

    def __post_init__(self) -> None:
        if self.spiking_space and self.zoo_net_arch:
            raise ZooUsageError("--spiking-space samples the hidden widths itself: leave out --zoo-net-arch")

    @property
    def given(self) -> bool:
        """Whether an option of the wrapper was given."""
        return self.spiking_space or self.zoo_net_arch


def _options_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} train", add_help=False, allow_abbrev=False)
    group = parser.add_argument_group("options of spiking_dqn.zoo (with -optimize --algo dqn; the rest is rl-zoo's)")
    for option in fields(ZooOptions):
        group.add_argument(f"--{option.name.replace('_', '-')}", action="store_true", help=option.metadata["help"])
    return parser


def split_arguments(argv: Sequence[str]) -> tuple[ZooOptions, list[str]]:
    """The wrapper's options, and the arguments left for rl-zoo (in their order).

    :param argv: the arguments after ``train``
    """
    parsed, rest = _options_parser().parse_known_args(list(argv))
    return ZooOptions(**{option.name: getattr(parsed, option.name) for option in fields(ZooOptions)}), rest


def trial_policy_kwargs(
    file_kwargs: Mapping[str, Any] | None, sampled_kwargs: Mapping[str, Any] | None, zoo_net_arch: bool = False
) -> dict[str, Any]:
    """A trial's ``policy_kwargs``: the file's, over what rl-zoo sampled.

    :param file_kwargs: the ``policy_kwargs`` of the file's entry (evaluated by rl-zoo)
    :param sampled_kwargs: those rl-zoo's sampler returned (for DQN: ``net_arch`` only)
    :param zoo_net_arch: whether rl-zoo's sampled ``net_arch`` replaces the file's
    """
    merged = dict(sampled_kwargs or {})
    merged.update(file_kwargs or {})
    if zoo_net_arch and sampled_kwargs and "net_arch" in sampled_kwargs:
        merged["net_arch"] = list(sampled_kwargs["net_arch"])
    return merged


def sample_spiking_options(trial: Any, policy_kwargs: Mapping[str, Any], env_id: str) -> dict[str, Any]:
    """``policy_kwargs`` with the spiking options sampled for ``trial`` (``--spiking-space``).

    The parameters and their ranges are the tuner's (:data:`SPIKING_PARAMS` of
    :data:`spiking_dqn.tune.space.SPACE`), applied as the tuner applies them
    (:func:`spiking_dqn.tune.space.spiking_options`).

    :param trial: the Optuna trial
    :param policy_kwargs: the merged ``policy_kwargs`` the samples replace
    :param env_id: the Gymnasium id (for the encoder bounds that ``obs_scale`` multiplies)
    """
    from spiking_dqn.tune import space

    return space.spiking_options(env_id, space.sample(trial, SPIKING_PARAMS), policy_kwargs)


@dataclass(frozen=True)
class SpikingDQNSampler:
    """rl-zoo's DQN sampler, with each trial's ``policy_kwargs`` merged (not replaced).

    :param zoo_sampler: rl-zoo's sampler (``HYPERPARAMS_SAMPLER["dqn"]``)
    :param file_kwargs: the file's ``policy_kwargs``
    :param options: the wrapper's options
    :param env_id: the Gymnasium id (``--spiking-space`` scales its encoder bounds)
    """

    zoo_sampler: Sampler
    file_kwargs: Mapping[str, Any]
    options: ZooOptions
    env_id: str

    def __call__(self, trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        sampled = dict(self.zoo_sampler(trial, n_actions, n_envs, additional_args))
        policy_kwargs = trial_policy_kwargs(self.file_kwargs, sampled.get("policy_kwargs"), self.options.zoo_net_arch)
        if self.options.spiking_space:
            policy_kwargs = sample_spiking_options(trial, policy_kwargs, self.env_id)
        trial.set_user_attr("policy_kwargs", repr(policy_kwargs))
        sampled["policy_kwargs"] = policy_kwargs
        return sampled

    def describe(self) -> str:
        """One line on what the trials' ``policy_kwargs`` will be."""
        kept = f"keeping the file's policy_kwargs {dict(self.file_kwargs)!r}"
        if self.options.spiking_space:
            return f"spiking_dqn.zoo: {kept}, with the spiking options sampled (--spiking-space)"
        if self.options.zoo_net_arch or "net_arch" not in self.file_kwargs:
            return f"spiking_dqn.zoo: {kept}, with rl-zoo's sampled net_arch"
        return f"spiking_dqn.zoo: {kept} (rl-zoo's sampled net_arch is not applied; --zoo-net-arch applies it)"


@contextlib.contextmanager
def installed_sampler(algo: str, sampler: Sampler) -> Iterator[None]:
    """``sampler`` as rl-zoo's sampler of ``algo`` (its ``HYPERPARAMS_SAMPLER`` table), then the previous one."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    previous = HYPERPARAMS_SAMPLER[algo]
    HYPERPARAMS_SAMPLER[algo] = sampler
    try:
        yield
    finally:
        HYPERPARAMS_SAMPLER[algo] = previous


def manager_class(options: ZooOptions) -> type:
    """rl-zoo's ``ExperimentManager`` with the merging sampler installed for ``-optimize --algo dqn``.

    :param options: the wrapper's options
    """
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    class SpikingExperimentManager(ExperimentManager):
        """``ExperimentManager`` whose DQN trials keep the file's ``policy_kwargs``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if options.given and not (self.optimize_hyperparameters and self.algo == "dqn"):
                raise ZooUsageError("--spiking-space and --zoo-net-arch apply to -optimize with --algo dqn only")

        def hyperparameters_optimization(self) -> None:
            if self.algo != "dqn":
                return super().hyperparameters_optimization()
            file_kwargs = self._hyperparams.get("policy_kwargs") or {}
            sampler = SpikingDQNSampler(HYPERPARAMS_SAMPLER["dqn"], file_kwargs, options, self.env_name.gym_id)
            print(sampler.describe())
            with installed_sampler("dqn", sampler):
                return super().hyperparameters_optimization()

        def load_trial(
            self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True
        ) -> dict[str, Any]:
            if self.algo != "dqn" or not convert:
                return super().load_trial(storage, study_name, trial_id, convert)
            return stored_trial_hyperparams(storage, study_name, trial_id)

    return SpikingExperimentManager


def stored_trial_hyperparams(storage: str, study_name: str, trial_id: int | None = None) -> dict[str, Any]:
    """The hyperparameters of a stored DQN trial (rl-zoo's ``--trial-id``), as the trial trained them.

    rl-zoo's ``load_trial`` converts a trial's parameters as its sampler does: ``policy_kwargs``
    becomes ``{'net_arch': ...}`` again, and the parameters of ``--spiking-space`` would reach
    ``DQN`` as keyword arguments. Here rl-zoo's converter gets rl-zoo's parameters only, and
    ``policy_kwargs`` are those the trial recorded (its ``policy_kwargs`` attribute); a trial
    of plain rl-zoo records none and trained rl-zoo's conversion, which it gets.

    :param storage: rl-zoo's ``--storage`` (a database URL, or a journal file ending ``.log``)
    :param study_name: rl-zoo's ``--study-name``
    :param trial_id: the trial's number (``None``: the best trial)
    """
    import optuna
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER

    from spiking_dqn.recipes.hyperparams import parse_policy_kwargs

    opened: Any = storage
    if storage.endswith(".log"):  # as rl-zoo's load_trial opens journal files
        opened = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    study = optuna.load_study(storage=opened, study_name=study_name)
    trial = study.best_trial if trial_id is None else study.trials[trial_id]
    hyperparams = HYPERPARAMS_CONVERTER["dqn"]({k: v for k, v in trial.params.items() if k not in SPIKING_PARAMS})
    recorded = trial.user_attrs.get("policy_kwargs")
    if recorded is not None:
        hyperparams["policy_kwargs"] = parse_policy_kwargs(recorded)
    return hyperparams


@contextlib.contextmanager
def _rl_zoo_with(manager: type, argv: Sequence[str]) -> Iterator[None]:
    """rl-zoo's ``train()`` reads ``argv`` and builds ``manager`` (the one patch of this module).

    Targets rl_zoo3 :data:`RL_ZOO_TARGET`: ``rl_zoo3.train.train()`` parses ``sys.argv`` and
    builds ``ExperimentManager`` by that name in the globals of ``rl_zoo3.train``, with no
    argument to pass a subclass; both are swapped for the call and restored after.
    ``tests/test_zoo.py::test_rl_zoo_still_has_the_hooks_the_wrapper_uses`` fails if a release
    changes either.
    """
    import rl_zoo3.train as zoo_train

    saved_argv, saved_manager = sys.argv, zoo_train.ExperimentManager
    sys.argv = [f"{PROG} train", *argv]
    zoo_train.ExperimentManager = manager  # type: ignore[misc]
    try:
        yield
    finally:
        sys.argv = saved_argv
        zoo_train.ExperimentManager = saved_manager  # type: ignore[misc]


def train(argv: Sequence[str]) -> None:
    """``python -m spiking_dqn.zoo train ARGS``: rl-zoo's train with the spiking settings kept.

    :param argv: rl-zoo's train arguments, and the wrapper's options (:class:`ZooOptions`)
    :raises ZooUsageError: wrong options of the wrapper
    """
    if "-h" in argv or "--help" in argv:
        _options_parser().print_help()
        print()
    options, rest = split_arguments(argv)
    try:
        import rl_zoo3.train as zoo_train
    except ImportError as exc:
        raise ZooUsageError(f"needs rl-zoo ({exc}): pip install 'spiking-dqn[zoo]'") from None
    with _rl_zoo_with(manager_class(options), rest):
        zoo_train.train()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``train ARGS`` (rl-zoo's train arguments).

    :param argv: the arguments (``sys.argv[1:]`` by default)
    :return: the exit status
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "train":
        print(f"usage: {PROG} train [--spiking-space | --zoo-net-arch] RL_ZOO_TRAIN_ARGS ...", file=sys.stderr)
        print("  rl-zoo's train (python -m rl_zoo3.train --help) with the file's spiking policy_kwargs kept", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        train(argv[1:])
    except ZooUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
