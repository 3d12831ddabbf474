"""The local stack's moto server loads this first (the stack puts this folder
on PYTHONPATH): what moto's Step Functions leaves out of a Distributed Map,
done as AWS documents it, so that the state machines the tests run are the
ones the template deploys.

- A Map Run fails once its failed (or timed-out) items exceed its tolerated
  failure threshold, with States.ExceedToleratedFailureThreshold; the
  threshold is 0 unless the definition sets ToleratedFailureCount or
  ToleratedFailurePercentage (either exceeded fails the run when both are
  set). moto counts the failed child and goes on as if it had succeeded.
  https://docs.aws.amazon.com/step-functions/latest/dg/maprun-fail-threshold.html
"""

try:
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as _distributed,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
except ImportError:  # not the moto server (another tool of the venv)
    _distributed = None


def _exceeded(failed: int, total: int, count: int, percentage: float) -> bool:
    count_set, percentage_set = bool(count), bool(percentage)
    over_count = failed > count
    over_percentage = total > 0 and failed * 100.0 / total > percentage
    if count_set and percentage_set:
        return over_count or over_percentage
    if percentage_set:
        return over_percentage
    return over_count


if _distributed is not None:
    _map_run = _distributed.DistributedIterationComponent._map_run

    def _map_run_with_threshold(self, env, eval_input):
        _map_run(self, env, eval_input)
        record = eval_input.map_run_record
        items = record.item_counter
        failed = items.failed.get() + items.timed_out.get()
        total = items.total.get()
        if not _exceeded(failed, total, record.tolerated_failure_count,
                         record.tolerated_failure_percentage):
            return
        error = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
        cause = (f"The specified tolerated failure threshold was exceeded: {failed} of {total}"
                 " items failed")
        raise FailureEventException(
            failure_event=FailureEvent(
                env=env,
                error_name=error,
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(
                    mapRunFailedEventDetails=MapRunFailedEventDetails(
                        error=error.error_name, cause=cause
                    )
                ),
            )
        )

    _distributed.DistributedIterationComponent._map_run = _map_run_with_threshold
