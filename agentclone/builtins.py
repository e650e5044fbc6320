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
def register_builders(register):
    from agentclone.builders.bc import BehaviourCloning
    from agentclone.builders.critical import CriticalSteps
    from agentclone.builders.leap import Leap
    from agentclone.builders.reflection import Reflection

    register("bc", BehaviourCloning)
    register("critical", CriticalSteps)
    register("reflection", Reflection)
    register("leap", Leap)
    from agentclone.builders.preference import ETOPairs, KTOLabels, StepPairs

    for builder in (StepPairs, KTOLabels, ETOPairs):
        register(builder.name, builder)


@hookimpl
def register_objectives(register):
    from agentclone.objectives.dpo import DPO
    from agentclone.objectives.kto import KTO
    from agentclone.objectives.sft import SFT

    register("sft", SFT)
    register("dpo", DPO)
    register("kto", KTO)


@hookimpl
def register_step_selectors(register):
    from agentclone.selectors.baseline import AllSteps, ProgressSteps, RandomSteps
    from agentclone.selectors.disagreement import DisagreementSteps
    from agentclone.selectors.judge import LLMJudge

    for selector in (LLMJudge, DisagreementSteps, ProgressSteps, RandomSteps, AllSteps):
        register(selector.name, selector)


@hookimpl
def register_formats(register):
    from agentclone.formats.agentgym import AgentGym
    from agentclone.formats.llamafactory import LlamaFactory
    from agentclone.formats.native import AgentcloneRows
    from agentclone.formats.openai import OpenAIMessages
    from agentclone.formats.sharegpt import ShareGPT

    for fmt in (AgentGym, ShareGPT, OpenAIMessages, LlamaFactory, AgentcloneRows):
        register(fmt.name, fmt)
