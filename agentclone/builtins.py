"""The built-in pieces, registered through the same hooks as any outside plugin."""

from agentclone import hookimpl


@hookimpl
def register_models(register):
    from agentclone.models import smollm2_135m

    register("smollm2-135m", smollm2_135m)


@hookimpl
def register_policy_backends(register):
    from agentclone.policies.expert import ExpertPolicy
    from agentclone.policies.hf import HFPolicy

    register("expert", ExpertPolicy)
    register("hf", HFPolicy)


@hookimpl
def register_trainers(register):
    from agentclone.trainers.bc import BehaviourCloning

    register("bc", BehaviourCloning)
