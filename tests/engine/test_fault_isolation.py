"""One request's fault stays with that request: a poisoned sequence in a batch of 16 fails alone
and the other 15 give the same output as alone; the loop survives faults outside any request;
and a loop that dies anyway says so, fails what it held and refuses new work."""

from __future__ import annotations

import threading

import pytest

from omniloom.config import EngineSettings
from omniloom.engine.engine import Engine, Job
from omniloom.engine.sampling import Sampler, SamplingParams
from omniloom.errors import ServiceUnavailable
from omniloom.processing.prompt import Prompt
from tests.engine.test_scheduler import GREEDY, Outcome, run_all, submit, text_prompt

QUESTIONS = [f"Give me fact number {i} about the sea." for i in range(15)]


@pytest.fixture(scope="module")
def engine(default_model):
    engine = Engine(default_model, EngineSettings(step_tokens=128))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def alone(engine, default_model) -> list[str]:
    return [run_all(engine, [text_prompt(default_model, q)])[0].texts for q in QUESTIONS]


class RaisingClient(Outcome):
    """A client whose event callback breaks on the first text it is given."""

    def __call__(self, event) -> None:
        if getattr(event, "text", ""):
            raise RuntimeError("client callback broke")
        super().__call__(event)


def _poison_out_of_vocab(engine, model, monkeypatch):
    prompt = text_prompt(model, "Hello")
    bad = Prompt(token_ids=[*prompt.token_ids[:-1], 10**9])  # past every embedding table
    return submit(engine, bad)


def _poison_forward(engine, model, monkeypatch):
    outcome = Outcome(1)
    job = Job(text_prompt(model, "Poisoned forward pass."), GREEDY, outcome)
    real = engine._step_embeds

    def failing(plan):
        if any(seq.job is job for seq, _ in plan):
            raise RuntimeError("forward pass broke on this sequence")
        return real(plan)

    monkeypatch.setattr(engine, "_step_embeds", failing)
    return engine.submit(job), outcome


def _poison_client(engine, model, monkeypatch):
    outcome = RaisingClient(1)
    return engine.submit(Job(text_prompt(model, "Say something."), GREEDY, outcome)), outcome


@pytest.mark.parametrize("poison", [_poison_out_of_vocab, _poison_forward, _poison_client])
def test_one_poisoned_request_among_16_fails_alone(
    engine, default_model, alone, monkeypatch, poison
):
    prompts = [text_prompt(default_model, q) for q in QUESTIONS]
    before = [submit(engine, p) for p in prompts[:7]]
    _, poisoned = poison(engine, default_model, monkeypatch)
    after = [submit(engine, p) for p in prompts[7:]]
    outcomes = [o for _, o in (*before, *after)]
    for outcome in (*outcomes, poisoned):
        assert outcome.done.wait(180)
    assert poisoned.error is not None
    assert [o.error for o in outcomes] == [None] * 15
    assert [o.texts for o in outcomes] == alone
    monkeypatch.undo()
    assert engine.blocks.used() == 0 and engine.running() == 0
    assert engine.health() is None


def test_any_integer_seed_fits_every_choice():
    for seed in (2**64 - 1, 2**63 - 1, -(2**63), -1, 0):
        params = SamplingParams(seed=seed, n=3)
        draws = [Sampler(params, i).generator.initial_seed() for i in range(3)]
        assert len(set(draws)) == 3


def test_seed_at_the_edge_with_n_serves_the_batch(engine, default_model):
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=2**64 - 1, n=2)
    outcome = run_all(engine, [text_prompt(default_model, "Tell me a joke.")], params)[0]
    assert all(outcome.texts) and outcome.reasons == ["length", "length"]


def test_loop_survives_a_fault_outside_any_request(engine, default_model, monkeypatch):
    real, calls = engine._plan, []

    def plan_fails_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("scheduler bug")
        return real()

    monkeypatch.setattr(engine, "_plan", plan_fails_once)
    hit = run_all(engine, [text_prompt(default_model, "Hi")], failures_ok=True)[0]
    assert isinstance(hit.error, RuntimeError)
    assert run_all(engine, [text_prompt(default_model, "Hi")])[0].texts[0]
    assert engine.blocks.used() == 0


class EngineKilled(BaseException):
    """Stands for what no ``except Exception`` catches."""


def test_a_dead_loop_reports_fails_its_jobs_and_refuses_work(default_model):
    engine = Engine(default_model, EngineSettings(), start=False)
    died = threading.Event()

    def dying_step():
        raise EngineKilled("injected")

    def run():
        try:
            engine.run_forever()
        except EngineKilled:
            died.set()

    engine.step = dying_step
    waiting = [submit(engine, text_prompt(default_model, "Hi"))[1] for _ in range(3)]
    assert engine.health() is None
    threading.Thread(target=run).start()
    assert died.wait(30)
    assert "EngineKilled" in engine.health()
    for outcome in waiting:
        assert outcome.done.wait(5) and isinstance(outcome.error, ServiceUnavailable)
    with pytest.raises(ServiceUnavailable):
        engine.submit(Job(text_prompt(default_model, "Hi"), GREEDY, Outcome(1)))
