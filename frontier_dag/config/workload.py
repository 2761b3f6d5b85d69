"""The workload: when requests arrive and how long their prompts and outputs are."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from frontier_dag.config.loading import Strict, positive_at_most

#: Requests (and closed-loop clients) of one workload: each has a row of per-request arrays
#: (docs/configuration.md, Limits); a typo's magnitude is an error before any is allocated.
MAX_REQUESTS = 10_000_000
RequestCount = positive_at_most(MAX_REQUESTS)


class ArrivalConfig(Strict):
    """Open-loop arrivals. ``gamma`` sets burstiness by the coefficient of variation of the
    gaps (cv=1 is Poisson); ``trace`` replays the arrival times of ``workload.trace``."""

    kind: Literal["poisson", "gamma", "constant", "trace"] = "poisson"
    rate_per_s: PositiveFloat | None = None
    cv: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _rate_given(self) -> ArrivalConfig:
        if self.kind != "trace" and self.rate_per_s is None:
            raise ValueError(f"arrival kind {self.kind!r} needs rate_per_s (requests per second, > 0)")
        return self


class LengthConfig(Strict):
    """A token-count distribution: ``fixed`` (value), ``uniform`` (low..high inclusive),
    ``lognormal`` (mean and cv), or ``trace`` (the trace's own column, resampled when the
    trace is not replayed). Draws are clipped to [low, high] where given."""

    kind: Literal["fixed", "uniform", "lognormal", "trace"] = "fixed"
    value: PositiveInt | None = None
    low: PositiveInt | None = None
    high: PositiveInt | None = None
    mean: PositiveFloat | None = None
    cv: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _params_given(self) -> LengthConfig:
        need = {"fixed": ["value"], "uniform": ["low", "high"], "lognormal": ["mean"], "trace": []}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"length kind {self.kind!r} needs {', '.join(missing)}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low={self.low} exceeds high={self.high}")
        return self


class TraceConfig(Strict):
    """A request trace: CSV in the Azure LLM inference format (TIMESTAMP, ContextTokens,
    GeneratedTokens) or the splitwise/Vidur format (arrived_at, num_prefill_tokens,
    num_decode_tokens), or Mooncake JSONL (timestamp in ms, input_length, output_length,
    hash_ids). ``path`` may use ``${FRONTIER_DAG_DATA}`` for the public data folder.
    When ``workload.arrival`` is not given and ``replay_arrivals`` is true, the trace's
    arrival times are replayed and its rows are used in order."""

    path: str
    format: Literal["auto", "azure", "splitwise", "mooncake"] = "auto"
    replay_arrivals: bool = Field(True, description="open loop without workload.arrival: replay the trace's arrival times")
    time_scale: PositiveFloat = Field(1.0, description="multiply the trace's gaps (0.5: twice the rate)")
    start: int = Field(0, ge=0, description="first row to use")
    block_tokens: PositiveInt = Field(512, description="tokens per Mooncake hash id")


class PromptPoolConfig(Strict):
    """A benchmark's dataset: ``size`` distinct prompts, reused until the run ends, as
    benchmark clients do (aiperf and genai-perf generate 100 synthetic prompts unless
    ``--num-dataset-entries`` says otherwise). Requests take them in shuffled passes (each
    prompt once per pass, in a new order every pass: aiperf's default ``shuffle`` sampling).
    A prompt's blocks of ``block_tokens`` tokens hash alike wherever it is sent again, so a
    repeat can hit the engine's prefix cache (``scheduler.prefix_caching``)."""

    size: RequestCount = Field(description="distinct prompts")
    block_tokens: PositiveInt = Field(16, description="tokens per prefix-cache block hash")


class MeasureConfig(Strict):
    """The steady window of the summary's ``steady`` figures, in seconds of simulated time.
    ``auto`` starts it where the warm-up ends (detected) and ends it at the last arrival
    (after it the load drains away); a number fixes that end (docs/simulation.md)."""

    start_s: NonNegativeFloat | Literal["auto"] = "auto"
    end_s: PositiveFloat | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _ordered(self) -> MeasureConfig:
        if isinstance(self.start_s, float) and isinstance(self.end_s, float) and self.start_s >= self.end_s:
            raise ValueError(f"start_s={self.start_s:g} is not before end_s={self.end_s:g}; the window needs start_s < end_s")
        return self


class WorkloadConfig(Strict):
    """Open loop (``arrival``) or closed loop (``clients``), with token-count models.
    Given a ``trace``, lengths not written in the config come from the trace."""

    arrival: ArrivalConfig | None = None
    clients: RequestCount | None = Field(None, description="closed loop: concurrent clients")
    think_time_s: float = Field(0.0, ge=0, description="closed loop: pause before the next request")
    turnaround_s: NonNegativeFloat | None = Field(None, description="closed loop: mean of a random (exponential) "
                                                  "time, drawn anew for every request, between a response and the "
                                                  "client's next request (none: no such time)")
    ramp_s: float = Field(0.0, ge=0, description="closed loop: each client sends its first request at a random "
                          "time within this many seconds (0: all at once)")
    prompt_tokens: LengthConfig = LengthConfig(kind="fixed", value=1024)
    prompt_pool: PromptPoolConfig | None = Field(None, description="prompts drawn from a dataset of this many, "
                                                 "reused (repeats can hit the prefix cache)")
    output_tokens: LengthConfig = LengthConfig(kind="fixed", value=128)
    trace: TraceConfig | None = None
    num_requests: RequestCount = 1000
    warmup_requests: int = Field(0, ge=0, description="left out of the summary statistics")
    measure: MeasureConfig = Field(MeasureConfig(), description="the steady window of summary.steady")

    @model_validator(mode="after")
    def _one_loop(self) -> WorkloadConfig:
        if self.clients is not None and self.arrival is not None:
            raise ValueError("give either arrival (open loop) or clients (closed loop), not both")
        if self.clients is None and self.arrival is None:
            if self.trace is not None and self.trace.replay_arrivals:
                self.arrival = ArrivalConfig(kind="trace")
            else:
                raise ValueError("give arrival (open loop, e.g. {kind: poisson, rate_per_s: 10}) or clients (closed loop)")
        if self.trace is not None:
            # A trace by itself means "replay this trace": its lengths, not the fixed defaults.
            for key in ("prompt_tokens", "output_tokens"):
                if key not in self.model_fields_set:
                    setattr(self, key, LengthConfig(kind="trace"))
        if self.arrival is not None and self.arrival.kind == "trace" and self.trace is not None \
                and not self.trace.replay_arrivals:
            raise ValueError("arrival kind 'trace' replays the trace's arrival times, "
                             "but workload.trace.replay_arrivals is false; drop one of them")
        if self.prompt_pool is not None and self.trace is not None:
            raise ValueError("workload.prompt_pool makes its own prompts and prefix blocks; a trace brings its "
                             "own: drop one of them")
        if self.warmup_requests >= self.num_requests:
            raise ValueError(f"warmup_requests={self.warmup_requests} leaves none of "
                             f"num_requests={self.num_requests} to measure; lower it")
        uses_trace = (self.arrival is not None and self.arrival.kind == "trace") or "trace" in (
            self.prompt_tokens.kind, self.output_tokens.kind)
        if uses_trace and self.trace is None:
            raise ValueError("arrival or lengths of kind 'trace' need workload.trace.path")
        return self
