import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { LockedResource } from './ids.js';
import type { ApproveRequest, RejectRequest, RestorePlan } from './restore-plan.js';

// Every signal, query and update a workflow handles, defined once: the workflows set their handlers
// on these, and the CLI, the client and the lock activity send them, so a name never drifts.

/** Approve the plan a restore waits on; its validator accepts it only while the run waits, and only for the dump shown. */
export const approveUpdate = defineUpdate<string, [ApproveRequest]>('approveRestore');
export const rejectUpdate = defineUpdate<string, [RejectRequest]>('rejectRestore');
export const restorePlanQuery = defineQuery<RestorePlan | undefined>('restorePlan');
/** The signal older versions approved with (and the Web UI's "Send a signal" can send, empty): logged, never an approval. */
export const legacyApproveSignal = defineSignal<unknown[]>('approve');
/** What a run is doing now: every workflow answers it. */
export const currentStepQuery = defineQuery<string>('currentStep');

/** A ResourceLock's requests and answers. */
export const acquireSignal = defineSignal<[{ requester: string }]>('acquire');
export const releaseSignal = defineSignal<[{ requester: string }]>('release');
export const lockGrantedSignal = defineSignal<[{ resource: LockedResource }]>('lockGranted');
export const lockHeldSignal = defineSignal<[{ resource: LockedResource; holder: string }]>('lockHeld');
