"""The one error type of `apply`.

Every problem a user can fix (bad input, a settings clash with an earlier run,
a missing optional package, a base model missing on a Ray node) is raised as
an ApplyError whose message names the problem and the fix; the command prints
it as one line instead of a traceback. It is a ValueError with a single
message argument, so it survives pickling out of a Ray actor.
"""


class ApplyError(ValueError):
    """`apply` cannot go on; the message says why and what to do."""


def find_apply_error(error: BaseException):
    """The ApplyError behind `error`, if any.

    Ray hands an exception raised inside an actor back to the driver wrapped,
    once by Ray Core (a RayTaskError / ActorDiedError holding it as `.cause`)
    and possibly again by Ray Data; walk the chain to find ours.
    """
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current) is ApplyError:
            return current
        stack.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    return None
