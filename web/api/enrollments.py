"""API v1: pausing, resuming and finishing an enrolment by hand.

    POST /enrollments/{id}/pause    active → paused: no step goes out until resumed
    POST /enrollments/{id}/resume   paused → active: a due step goes out now, else at its time
    POST /enrollments/{id}/finish   active or paused → finished: no further step

Each is `worker.sequences.by_hand.change_by_hand`, what the enrolment page and the
add-ons call: one conditional UPDATE, so a reply recorded at the same moment wins
or loses cleanly. An enrolment in a state the action does not leave answers 409
with its state, never a silent success; the history says which token's user did it.
"""

from __future__ import annotations

from flask import g
from flask.typing import ResponseReturnValue

from core.models import Enrollment
from web.api.common import ApiError
from web.api.operations import operation
from web.api.routes import enrollment_out, owned
from web.api.schemas import EnrollmentOut
from web.db import db
from worker.sequences.by_hand import FROM_STATES, Action, change_by_hand

NOT_NOW = "The enrolment is not in a state this action leaves (error.message says which it is)"


def _change(enrollment_id: int, action: Action) -> ResponseReturnValue:
    enrollment = owned(Enrollment, enrollment_id, "enrollment")
    changed = change_by_hand(db(), enrollment.id, action, g.user.email)
    db().commit()
    db().refresh(enrollment)
    if not changed:
        allowed = " or ".join(sorted(str(s) for s in FROM_STATES[action]))
        raise ApiError(
            409,
            "conflict",
            f"the enrollment is {enrollment.state}; {action} needs it {allowed}",
        )
    return enrollment_out(enrollment)


@operation(
    "POST",
    "/enrollments/<int:enrollment_id>/pause",
    summary="Pause an enrollment: no step goes out until it is resumed",
    response=EnrollmentOut,
    errors={409: NOT_NOW},
)
def pause_enrollment(enrollment_id: int) -> ResponseReturnValue:
    return _change(enrollment_id, "pause")


@operation(
    "POST",
    "/enrollments/<int:enrollment_id>/resume",
    summary="Resume a paused enrollment: a due step goes out now, a later one at its time",
    response=EnrollmentOut,
    errors={409: NOT_NOW},
)
def resume_enrollment(enrollment_id: int) -> ResponseReturnValue:
    return _change(enrollment_id, "resume")


@operation(
    "POST",
    "/enrollments/<int:enrollment_id>/finish",
    summary="Finish (stop) an enrollment: no further step goes out",
    response=EnrollmentOut,
    errors={409: NOT_NOW},
)
def finish_enrollment(enrollment_id: int) -> ResponseReturnValue:
    return _change(enrollment_id, "finish")
