"""A study's whole processing pass as one activity: the steps of activities/study_steps.py in
order (store, verify and commit as one, `take_in`), with the forwards started once the objects are committed and indexed and before the series
documents are written, as the workflow did with one activity or local activity per step.

One activity instead of seven costs the study's history about 20 events fewer and the Temporal
server and the worker's SDK most of their CPU per study (bench/results/2026-12-07-ingest-profile.md:
85 ms of server CPU for a one-instance study). Every step consumes the instances in the state it
takes, so a retry of the pass after a crash redoes only what is left."""

from __future__ import annotations

from temporalio import activity

from activities.routing_steps import RoutingActivities
from activities.study_steps import StudyActivities
from contract import names
from contract.payloads import StudyPass, StudyRef


class StudyPassActivity:
    def __init__(self, steps: StudyActivities, routing: RoutingActivities) -> None:
        self.steps = steps
        self.routing = routing

    def all(self) -> list:
        return [self.process]

    @activity.defn(name=names.PROCESS_STUDY)
    async def process(self, ref: StudyRef) -> StudyPass:
        done = StudyPass()
        s = self.steps
        done.steps.extend(await s.take_in(ref))
        for step in (s.transcode, s.index):
            done.steps.append(await step(ref))
        done.routed = await self.routing.route(ref)
        done.steps.append(await s.generate_json(ref))
        done.failed_in_study = await s.failed_in_study(ref)
        return done
