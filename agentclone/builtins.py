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
    # both import their heavy dependency (vllm, httpx) only when a policy is made
    from agentclone.policies.openai import OpenAIPolicy
    from agentclone.policies.vllm import VLLMPolicy

    register("vllm", VLLMPolicy)
    register("openai", OpenAIPolicy)


@hookimpl
def register_trainers(register):
    from agentclone.trainers.bc import BehaviourCloning
    from agentclone.trainers.critical import CriticalSteps

    register("bc", BehaviourCloning)
    register("critical", CriticalSteps)
    from agentclone.trainers.reflection import Reflection

    register("reflection", Reflection)


@hookimpl
def register_step_selectors(register):
    from agentclone.selectors.baseline import AllSteps, ProgressSteps, RandomSteps
    from agentclone.selectors.disagreement import DisagreementSteps
    from agentclone.selectors.judge import LLMJudge

    for selector in (LLMJudge, DisagreementSteps, ProgressSteps, RandomSteps, AllSteps):
        register(selector.name, selector)
