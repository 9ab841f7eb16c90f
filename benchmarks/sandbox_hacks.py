"""Does an equality hack pass HumanEval's hidden tests? And do the reference solutions?

Every problem's entry point is replaced by a function returning an object that says yes
to everything a test might ask (``==``, ``!=``, ``<``, ``>``, truth, hash, repr; a ``str``
subclass, so type checks pass too). Both it and the reference solutions are scored on
the hidden tests through the sandbox, as ``ucoder eval`` scores picks.

    python benchmarks/sandbox_hacks.py

Last line: ``hack_passes=<n>/164 reference_passes=<m>/164``.
"""

from __future__ import annotations

from ucoder.evaluation.benchmarks import load_humaneval
from ucoder.evaluation.programs import hidden_job
from ucoder.sandbox import Sandbox

HACK = '''
class Yes(str):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __hash__(self): return 0
    def __bool__(self): return True
    def __repr__(self): return "True"
    def __sub__(self, other): return self
    def __rsub__(self, other): return self
    def __abs__(self): return self
    def __len__(self): return 1

def {name}(*args, **kwargs):
    return Yes()
'''


def main() -> None:
    problems = load_humaneval()
    hacks = [hidden_job(p, HACK.replace("{name}", p.entry_point), p.task_id, 10.0)
             for p in problems]
    refs = [hidden_job(p, p.solution[len(p.context):], f"ref-{p.task_id}", 10.0)
            for p in problems]
    with Sandbox() as box:
        results = box.run(hacks + refs)
    hack = [r.id for r in results[:len(problems)] if r.status == "passed"]
    ref = sum(r.status == "passed" for r in results[len(problems):])
    if hack:
        print("the hack passes:", ", ".join(hack))
    print(f"hack_passes={len(hack)}/{len(problems)} reference_passes={ref}/{len(problems)}")


if __name__ == "__main__":
    main()
