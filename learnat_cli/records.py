"""Records that cross a file between stages. All are pydantic models with ``extra="allow"``: keys a stage
does not know pass through it untouched, and the stable ``id`` travels from question to eval.

Field names, shared by every stage:
- ``gold``: the gold SQL; ``pred``: a predicted SQL.
- ``question``, ``evidence`` (BIRD's hint), ``db_id``, ``db_path`` (an explicit SQLite file), ``difficulty``.

Flow::

    Example --decompose--> Trajectory (+ TreeRecord with --trees)
    TreeRecord --build-pairs--> PreferencePair (or SftRow with --sft)
    SftRow --sft--> adapter folder;  PreferencePair --mdpo--> adapter folder
    Example/Demo --index--> FAISS folder;  Example --ask--> Prediction --eval--> EvalResult (+ EvalReport)

Every record rejects NaN and infinite numbers (``allow_inf_nan=False``) and does not coerce types:
``gold: 42`` or ``difficulty: NaN`` is a one-line field error (``file:line: field 'gold': Input should be a
valid string``) through :func:`learnat_cli.jsonl.parse_record`. docs/CONTRACTS.md lists which stage reads
and writes which.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError


class Record(BaseModel):
    """Base of every record: unknown keys pass through, NaN/inf are refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Example(Record):
    """A question, optionally with its gold SQL. Spider (``query``) and BIRD (``SQL``, ``question_id``) rows
    are mapped onto it by :mod:`learnat_cli.datasets`."""

    id: str
    question: str
    db_id: str | None = None
    db_path: str | None = None
    gold: str | None = None
    evidence: str | None = None
    difficulty: str | None = None


StepStatus = Literal["progressive", "redundant", "invalid"]


class Step(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    question: str
    sql: str
    status: StepStatus | None = None
    reward: float | None = None


class Trajectory(Example):
    """``decompose`` output: the best decomposition found for one example."""

    steps: list[Step] = Field(default_factory=list)
    reached_gold: bool = False
    reward: float = 0.0
    teacher: str | None = None
    teacher_calls: int = 0
    teacher_tokens: int = 0


class TreeNode(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    node_id: int
    parent: int | None = None
    depth: int = 0
    step: Step | None = None  # None for the root
    status: str | None = None  # root | progressive | redundant | invalid
    visits: int = 0
    value: float = 0.0
    reward: float = 0.0
    terminal: bool = False


class TreeRecord(Trajectory):
    """``decompose`` output with the search tree: the trajectory plus every node (``nodes``) and the schema
    text the prompts used."""

    nodes: list[TreeNode] = Field(default_factory=list)
    schema_text: str | None = None


class PreferencePair(Record):
    """``build-pairs`` output, TRL preference format plus the AST margin."""

    id: str
    prompt: str | list[ChatMessage]  # text, or chat messages (TRL conversational format)
    chosen: str | list[ChatMessage]
    rejected: str | list[ChatMessage]
    margin: float = 0.0

    @field_validator("prompt", "chosen", "rejected", mode="wrap")
    @classmethod
    def _text_or_messages(cls, value: Any, handler: Any) -> Any:
        """One clear error for the text-or-messages union (the deepest problem, without pydantic's member
        tags)."""
        try:
            return handler(value)
        except ValidationError as e:
            err = max(e.errors(), key=lambda x: len(x["loc"]))
            where = ".".join(str(p) for p in err["loc"][1:])
            what = "missing required field" if err["type"] == "missing" else err["msg"]
            raise PydanticCustomError("text_or_messages", "expected a string or a list of chat messages"
                                      + (f" ({where}: {what})" if where else "")) from None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    role: str
    content: str


class SftRow(Record):
    """``build-pairs --sft`` output (or any rows with ``messages``, or ``prompt``/``completion``)."""

    id: str | None = None
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    completion: str | None = None

    def form(self) -> str:
        """``"messages"`` or ``"prompt_completion"``; a row with nothing to learn from raises a LearnatError
        naming the field (the reader adds file and line)."""
        from learnat_cli.errors import LearnatError

        if self.messages is not None:
            if not any(m.role == "assistant" for m in self.messages):
                raise LearnatError("no assistant message to learn from", field="messages")
            return "messages"
        if self.prompt is None and self.completion is None:
            raise LearnatError("missing required field (expected 'messages', or 'prompt' and 'completion')",
                               field="messages")
        for name in ("prompt", "completion"):
            if getattr(self, name) is None:
                raise LearnatError("missing required field", field=name)
        if not self.completion:
            raise LearnatError("empty completion", field="completion")
        return "prompt_completion"


class VoteCandidate(BaseModel):
    """One candidate of ``ask --samples N``: its SQL, why it failed (validation or execution) or the result
    group it joined, its mean token log-probability, and whether it is the greedy answer."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    sql: str | None = None
    error: str | None = None
    logprob: float | None = None
    group: int | None = None
    greedy: bool = False


class Vote(BaseModel):
    """The vote of ``ask --samples N``: candidate indices per result group, the winning group and the chosen
    candidate (None when no candidate ran: the greedy answer then went on to the retry)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    groups: list[list[int]] = Field(default_factory=list)
    winner: int | None = None
    chosen: int | None = None


class Prediction(Example):
    """``ask`` output, ``eval`` input: ``pred`` is the final SQL; ``db_path`` the database it ran on. Result
    ``rows`` hold JSON values (a BLOB as ``X'..'`` text, see :mod:`learnat_cli.stages.ask`)."""

    pred: str | None = None
    steps: list[Step] = Field(default_factory=list)
    decomposed: bool | None = None
    error: str | None = None
    demos: list[str] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    truncated: bool = False
    attempts: int = 0
    latency_s: float = 0.0
    candidates: list[VoteCandidate] | None = Field(default=None, exclude_if=lambda v: v is None)  # --samples
    vote: Vote | None = Field(default=None, exclude_if=lambda v: v is None)
    tokens: int | None = Field(default=None, exclude_if=lambda v: v is None)  # generated tokens
    # the student's SQL when ``pred`` is it with a column moved to the one joined table that has it
    rebound_from: str | None = Field(default=None, exclude_if=lambda v: v is None)


class EvalResult(Record):
    """``eval`` output, one per prediction: whether its result matches the gold's on the database."""

    id: str
    correct: bool
    error: str | None = None  # why the prediction failed (SQL error, time or size limit)
    gold_error: str | None = None  # the gold itself failed: left out of the denominator
    failure: str | None = None  # why a wrong prediction is wrong (metrics.FAILURES): a class for reports
    difficulty: str = "unknown"
    db_path: str | None = None
    pred: str | None = None
    gold: str | None = None


class DifficultyScore(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    count: int = 0
    correct: int = 0
    errors: int = 0
    gold_errors: int = 0
    accuracy: float = 0.0


class EvalReport(BaseModel):
    """``eval --report``: execution accuracy overall (``by_difficulty["all"]``) and per difficulty level."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    metric: str
    accuracy: float = 0.0
    n_items: int = 0
    timeout_s: float | None = None
    by_difficulty: dict[str, DifficultyScore] = Field(default_factory=dict)
    failures: dict[str, int] = Field(default_factory=dict)  # wrong predictions per failure class
