"""Records that cross a file between stages. All are pydantic models with ``extra="allow"``: keys a stage
does not know pass through it untouched, and the stable ``id`` travels from question to eval.

Field names, shared by every stage:
- ``gold``: the gold SQL; ``pred``: a predicted SQL.
- ``question``, ``evidence`` (BIRD's hint), ``db_id``, ``db_path`` (an explicit SQLite file), ``difficulty``.

Flow::

    Example --decompose--> Trajectory (+ TreeRecord with --trees)
    TreeRecord --build-pairs--> PreferencePair (or SftRow with --sft)
    SftRow --sft--> adapter folder;  PreferencePair --mdpo--> adapter folder
    Example/Demo --index--> FAISS folder;  Example --ask--> Prediction --eval--> report
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Example(Record):
    """A question, optionally with its gold SQL. Spider (``query``) and BIRD (``SQL``, ``question_id``) rows are
    mapped onto it by :mod:`learnat_cli.datasets`."""

    id: str
    question: str
    db_id: Optional[str] = None
    db_path: Optional[str] = None
    gold: Optional[str] = None
    evidence: Optional[str] = None
    difficulty: Optional[str] = None


StepStatus = Literal["progressive", "redundant", "invalid"]


class Step(BaseModel):
    model_config = ConfigDict(extra="allow")

    question: str
    sql: str
    status: Optional[StepStatus] = None
    reward: Optional[float] = None


class Trajectory(Example):
    """``decompose`` output: the best decomposition found for one example."""

    steps: list[Step] = Field(default_factory=list)
    reached_gold: bool = False
    reward: float = 0.0
    teacher: Optional[str] = None
    teacher_calls: int = 0
    teacher_tokens: int = 0


class TreeNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    node_id: int
    parent: Optional[int] = None
    depth: int = 0
    step: Optional[Step] = None  # None for the root
    status: Optional[str] = None  # root | progressive | redundant | invalid
    visits: int = 0
    value: float = 0.0
    reward: float = 0.0
    terminal: bool = False


class TreeRecord(Trajectory):
    """``decompose`` output with the search tree: the trajectory plus every node (``nodes``) and the schema text
    the prompts used."""

    nodes: list[TreeNode] = Field(default_factory=list)
    schema_text: Optional[str] = None


class PreferencePair(Record):
    """``build-pairs`` output, TRL preference format plus the AST margin."""

    id: str
    prompt: Union[str, list[dict[str, Any]]]  # text, or chat messages (TRL conversational format)
    chosen: Union[str, list[dict[str, Any]]]
    rejected: Union[str, list[dict[str, Any]]]
    margin: float = 0.0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class SftRow(Record):
    """``build-pairs --sft`` output (or any rows with ``messages``, or ``prompt``/``completion``)."""

    id: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    prompt: Optional[str] = None
    completion: Optional[str] = None


class Prediction(Example):
    """``ask`` output, ``eval`` input: ``pred`` is the final SQL."""

    pred: Optional[str] = None
    steps: list[Step] = Field(default_factory=list)
    decomposed: Optional[bool] = None
    error: Optional[str] = None
