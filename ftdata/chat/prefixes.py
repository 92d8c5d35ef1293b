"""Every prefix render of a conversation read off one render of it, where the template's message loop proves it.

A long record is checked on its prefixes: each trained history turn against `render(msgs[:i+1])`, each turn's
inference prompt against `render(msgs[:i], generation=True)`, one render of the prefix each. Many templates
write a conversation as one loop over its messages, then a generation prompt:

    {% if messages[0].role == 'system' %}...{% endif %}           prelude: reads messages[0]
    {% for message in messages %}...{% endfor %}                  one message per pass
    {% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}

Rendering `msgs[:n]`, such a template runs exactly as it runs on `msgs` (a deterministic program given the same
answers) until it first asks something of `messages` that the two answer differently: message k for k >= n,
how many there are, the last one. Where that first question is its loop asking for message n after writing
message n-1, the loop ends there and the template writes what follows the loop, which reads nothing the loop
changed: so `render(msgs[:n], generation=g)` is A up to that point, then that tail, the same for every n.

`read` renders A once with its messages in a `Watched` sequence that records every question and where in A's
text it was asked, and keeps each n whose first differing question is that clean end of the loop (`Prefixes`).
The template itself must have that shape (`loop_shaped`, read from its syntax tree once per template): one loop
over `messages` at its top level, without a filter, `else` or recursion; `messages` used nowhere else but indexed
by a number, or named again before the loop as it is or from a constant start on (`loop_messages = messages[1:]`,
which the sequence watches too; another slice, a filter, a test or passing it on would ask what it does not record);
`add_generation_prompt` read only after the loop, and after it no name that the template assigns. The two tails
come from two renders of the shortest proven prefix, which must agree with A.

Where msgs[:n] first differs as the loop looks ahead from message n-1 (`loop.last`, `loop.nextitem`: Qwen2.5's
tool result asks whether another follows), msgs[:n] writes A up to that look, then the rest of that pass as the
last one. Where no pass leaves anything to the next (`passes_apart`), a second render that answers every look
ahead with "no next message" (`Watched.lies`) writes each pass as msgs[:n] writes its last one: that stretch is
read off it (`_ahead`). A prefix whose first differing question is another (the message after it, the count) is
not proven: it is checked by its own render, as before. Only `Direct`'s renders (the template run as transformers
runs it) are watched; elsewhere nothing is proven.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.runtime import LoopContext

from ftdata.errors import TemplateError

__all__ = ["Prefixes", "Watched", "loop_shaped", "passes_apart", "read"]

# What a question is: any other (a message, the count), the template's own loop moving on to the next message, or
# that loop looking ahead (`loop.last`, `loop.nextitem`: LoopContext._peek_next).
ASK, STEP, PEEK = 0, 1, 2
# Where the loop moves on (LoopContext's own step; the template's code where the loop does not read `loop`:
# `Watched` is told that code) and where it looks ahead (`loop.length` lists the rest: a plain question).
_STEPS = LoopContext.__next__.__code__
_PEEKS = LoopContext._peek_next.__code__


@dataclass(frozen=True, slots=True)
class Prefixes:
    """`render(msgs[:n], generation=g)` read off A (`text`): A[:cut] + written + tails[g] for each n in `cuts`
    (n -> (cut, written); 1 <= n <= len(msgs)). `written` is empty where the loop's step to message n is where
    msgs[:n] first differs; where that is the loop looking ahead (`loop.last`), it is what the rest of the pass
    over message n-1 writes when it is the last one (`_ahead`)."""

    text: str
    cuts: dict[int, tuple[int, str]]
    tails: tuple[str, str]  # what the template writes after its loop: without, with the generation prompt

    def starts(self, n: int) -> bool | None:
        """Whether A begins with `render(msgs[:n])`; None where that is not proven."""
        if n not in self.cuts:
            return None
        cut, written = self.cuts[n]
        return self.text.startswith(written + self.tails[0], cut)

    def prompt_end(self, n: int) -> int | None:
        """len(render(msgs[:n], generation=True)) where A begins with that render; None where it does not or
        that is not proven."""
        if n not in self.cuts:
            return None
        cut, written = self.cuts[n]
        prompt = written + self.tails[1]
        return cut + len(prompt) if self.text.startswith(prompt, cut) else None


class Watched(Sequence[Any]):
    """The messages a template is given, recording each question it asks of them in `asked`: (reach, kind,
    where) with `where` the length of the text written so far (`at`), `reach` the largest n for which msgs[:n]
    answers otherwise than the whole (message k: k; its length or a negative index: the count - 1; the loop's step
    or look to message k, or past the last one: k), `kind` ASK, STEP (the template's own loop, `loop` its code
    where it does not read `loop`) or PEEK.

    `lies`: each look ahead is told there is no next message (the loop still steps to it): each pass is written as
    if it were the last (`_ahead`).

    `messages[c:]` (a constant start: Llama 3 and Gemma 3 set the system message apart) is a view of the same
    messages from c on, whose questions are recorded here too, by the index of the message they concern."""

    def __init__(self, items: list[Any], loop: Any, *, lies: bool = False, start: int = 0, root: Watched | None = None):
        self._items, self._loop, self._start = items, loop, start
        self._root = self if root is None else root
        if root is None:
            self.asked: list[tuple[int, int, int]] = []
            self.at = 0  # the length of the text the render has written so far
            self.iterated = 0
            self.unknown = False  # asked what a list answers otherwise: nothing is proven
            self.lies = lies
            self.text: str | None = None  # what the render wrote, once it has

    def _ask(self, reach: int, kind: int = ASK) -> None:
        root = self._root
        root.asked.append((reach, kind, root.at))

    def __len__(self) -> int:
        self._ask(len(self._items) - 1)
        return len(self._items) - self._start

    def __getitem__(self, k: Any) -> Any:
        count = len(self._items)
        if isinstance(k, int) and k >= 0:
            if self._start + k < count:  # past the end, msgs[:n] raises too
                self._ask(self._start + k)
            return self._items[self._start + k]
        if isinstance(k, int):
            self._ask(count - 1)
        elif (start := _start_of(k)) is not None:
            return Watched(self._items, self._loop, start=min(self._start + start, count), root=self._root)
        else:
            # A name (`messages['x']`: Jinja then looks for an attribute, which a list and this sequence have
            # otherwise), another slice: nothing is proven.
            self._root.unknown = True
        return self._items[self._start :][k]

    def __iter__(self) -> Iterator[Any]:
        self._root.iterated += 1
        return _Steps(self)

    def __contains__(self, value: object) -> bool:
        self._ask(len(self._items) - 1)
        return value in self._items[self._start :]

    def __reversed__(self) -> Iterator[Any]:
        self._ask(len(self._items) - 1)
        return reversed(self._items[self._start :])

    def __repr__(self) -> str:
        self._ask(len(self._items) - 1)
        return repr(self._items[self._start :])


def _start_of(cut: Any) -> int | None:
    """c for a slice `[c:]` (c >= 0, or none: 0); None for anything else."""
    if not isinstance(cut, slice) or cut.stop is not None or cut.step is not None:
        return None
    start = 0 if cut.start is None else cut.start
    return start if type(start) is int and start >= 0 else None


class _Steps:
    """An iterator over a `Watched` sequence that records each step: which message, whether the loop itself moved
    on (its caller's code is the loop's step), and where."""

    __slots__ = ("_k", "_of")

    def __init__(self, of: Watched):
        self._of, self._k = of, of._start

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> Any:
        of, k = self._of, self._k
        code = sys._getframe(1).f_code
        kind = STEP if code is _STEPS or code is of._loop else PEEK if code is _PEEKS else ASK
        of._ask(k, kind)
        if k >= len(of._items) or (kind == PEEK and of._root.lies):
            raise StopIteration
        self._k = k + 1
        return of._items[k]


def firsts(asked: list[tuple[int, int, int]], count: int) -> dict[int, tuple[int, int]]:
    """For each n in 1..count whose first differing question (the first with reach >= n) is about message n
    itself (the loop's step or look to it: reach n): that question's (kind, where)."""
    out: dict[int, tuple[int, int]] = {}
    reached = 0
    for reach, kind, where in asked:
        if reach > reached:
            if kind != ASK and reach <= count:
                out[reach] = (kind, where)
            reached = reach
    return out


def _ahead(asked: list[tuple[int, int, int]], wanted: set[int]) -> dict[int, tuple[int, int]]:
    """From a render that `lies` (`Watched`): for each n of `wanted`, where in its text the pass over message n-1
    first looks ahead and where the loop steps to message n; only where every question before that step that
    reaches n is a look ahead to message n from that pass (so msgs[:n] answers each alike: nothing else, such as
    a `loop.length` the loop keeps, was learnt of the messages after n-1). One pass over the questions."""
    out: dict[int, tuple[int, int]] = {}
    before = 0  # the largest reach asked before the current pass
    n: int | None = None  # the current pass is over message n-1
    look, alike, most = None, True, 0  # its first look ahead to n; whether it asked nothing else of n on; its reach
    for reach, kind, where in asked:
        if kind == STEP:
            if reach == n and n in wanted and alike and look is not None and before < n:
                out[n] = (look, where)
            before = max(before, most)
            n, look, alike, most = reach + 1, None, True, reach
            continue
        most = max(most, reach)
        if n is not None and reach >= n:
            if reach == n and kind == PEEK:
                look = where if look is None else look
            else:
                alike = False
    return out


@functools.lru_cache(maxsize=64)
def loop_shaped(environment: Any, source: str) -> bool:
    """Whether `source` is a template whose prefix renders `read` may prove (see the module). `messages` may be
    named again before the loop, at the top level (`{% set loop_messages = messages[1:] %}`): as it is, or from a
    constant start on."""
    try:
        tree = environment.parse(source)
    except Exception:  # noqa: BLE001 (a template its environment cannot parse proves nothing)
        return False
    if any(True for _ in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))):
        return False
    body = tree.body
    names, allowed = _names(tree)
    loops = _loops(body, names)
    if len(loops) != 1:
        return False
    k = loops[0]
    loop = body[k]
    if loop.recursive or loop.else_ or loop.test is not None:
        return False
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    assigned |= {m.name for m in tree.find_all(nodes.Macro)}
    after = [n for node in body[k + 1 :] for n in node.find_all(nodes.Name)]
    if any(n.name in assigned or n.name in names for n in after):
        return False
    before = [n for node in body[: k + 1] for n in node.find_all(nodes.Name)]
    if any(n.name == "add_generation_prompt" for n in before):
        return False
    allowed |= {
        id(g.node) for g in tree.find_all(nodes.Getitem) if _named(g.node, names) and not isinstance(g.arg, nodes.Slice)
    }
    allowed.add(id(_source(loop.iter)))
    return all(id(n) in allowed for n in tree.find_all(nodes.Name) if n.name in names)


@functools.lru_cache(maxsize=64)
def passes_apart(environment: Any, source: str) -> bool:
    """Whether no pass of a `loop_shaped` template's loop leaves anything to the next but the loop's own step: no
    namespace attribute set anywhere, no `loop.changed` (it remembers the last pass). A name set in a pass is not
    left to the next: Jinja looks it up again at the start of each pass. Then a pass over message k is written
    alike in every render that reaches it the same way (`_ahead`)."""
    tree = environment.parse(source)
    if any(isinstance(a.target, nodes.NSRef) for a in tree.find_all((nodes.Assign, nodes.AssignBlock))):
        return False
    (k,) = _loops(tree.body, _names(tree)[0])  # one: the template is `loop_shaped`
    loop = tree.body[k]
    return not any(g.attr == "changed" and _named(g.node, {"loop"}) for g in loop.find_all(nodes.Getattr))


def _names(tree: nodes.Template) -> tuple[set[str], set[int]]:
    """`messages` and the names set to it at the template's level (as it is or from a constant start on), with the
    nodes (by id) of those settings that name them: read as `read` watches them."""
    names, naming = {"messages"}, set()
    for node in _top_level(tree.body):
        if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name) and _reads(node.node, names):
            names.add(node.target.name)
            naming |= {id(node.target), id(_source(node.node))}
    return names, naming


def _loops(body: list[nodes.Node], names: set[str]) -> list[int]:
    """Where in `body` a loop walks the messages (under one of `names`, or from a constant start on)."""
    return [k for k, node in enumerate(body) if isinstance(node, nodes.For) and _reads(node.iter, names)]


def _top_level(body: list[nodes.Node]) -> Iterator[nodes.Node]:
    """The statements of `body` and of the `if` blocks in it, in order: those that run at the template's level."""
    for node in body:
        yield node
        if isinstance(node, nodes.If):
            yield from _top_level(node.body)
            for branch in node.elif_:
                yield from _top_level([branch])
            yield from _top_level(node.else_)


def _reads(node: nodes.Node, names: set[str]) -> bool:
    """Whether `node` is one of `names`, or one of them from a constant start on (`messages[1:]`)."""
    if _named(node, names):
        return True
    if not (isinstance(node, nodes.Getitem) and _named(node.node, names) and isinstance(node.arg, nodes.Slice)):
        return False
    cut = node.arg
    start = cut.start
    constant = start is None or (isinstance(start, nodes.Const) and type(start.value) is int and start.value >= 0)
    return constant and cut.stop is None and cut.step is None


def _source(node: nodes.Node) -> nodes.Node:
    """The name that `_reads` found in `node`: itself, or the one it is a slice of."""
    return node.node if isinstance(node, nodes.Getitem) else node


def _named(node: nodes.Node, names: set[str]) -> bool:
    return isinstance(node, nodes.Name) and node.name in names and node.ctx == "load"


def read(
    text: str,
    msgs: list[dict[str, Any]],
    render: Callable[..., str],
    watched: Callable[[bool], Watched | None],
    apart: Callable[[], bool],
) -> Prefixes | None:
    """The prefix renders of `msgs` (A = `text`) that one watched render proves (`watched(lies)`: that render's
    record, None where the template is not `loop_shaped` or the render is not `Direct`'s), with those whose first
    difference is the loop looking ahead, from a second render that `lies`, where no pass leaves anything to the
    next (`apart`: `passes_apart`); their tails from two renders of the shortest proven prefix by `render`. None
    where none is proven or those renders disagree with A."""
    seen = watched(False)
    if seen is None or _proving(seen) != text:
        return None
    count = len(msgs)
    found = firsts(seen.asked, count)
    cuts = {n: (where, "") for n, (kind, where) in found.items() if kind == STEP}
    ahead = {n for n, (kind, _) in found.items() if kind == PEEK and n < count}
    lying = watched(True) if ahead and apart() else None
    if lying is not None and (lied := _proving(lying)) is not None:
        for n, (look, step) in _ahead(lying.asked, ahead).items():
            cuts[n] = (found[n][1], lied[look:step])
    # where A's own loop ended (its step past the last message), for the tails
    whole = next((where for reach, kind, where in seen.asked if kind == STEP and reach == count), None)
    cuts.pop(count, None)
    if whole is None or not cuts:
        return None
    cuts[count] = (whole, "")
    shorter = [n for n in cuts if n < count]
    n = min(shorter)
    try:
        bare, prompt = render(msgs[:n]), render(msgs[:n], generation=True)
    except TemplateError:
        return None
    head = text[: cuts[n][0]] + cuts[n][1]
    if bare != head + text[whole:] or not prompt.startswith(head):
        return None
    return Prefixes(text, cuts, (text[whole:], prompt[len(head) :]))


def _proving(seen: Watched) -> str | None:
    """What a watched render wrote, where it proves anything: its loop was the only walk over the messages, and
    nothing was asked that a list answers otherwise."""
    return seen.text if seen.iterated == 1 and not seen.unknown else None
