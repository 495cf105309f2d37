// Every patched() ID the workflows use, in one place (docs/workflow-versioning.md says when a change
// needs one). An ID is recorded in each run's history as a marker: changing its text, even its case,
// makes every run that recorded it take the old branch on replay and fail as nondeterministic, so a
// value here never changes. A new change gets a new ID, named for what it changes. Each ID may be
// deprecated (deprecatePatch with only the new branch) once no open run of the workflows that call
// it started before the release that added it was deployed; its .before-<ID> histories in
// test/replay/histories/ are then deleted, as the policy says.

/**
 * The authorization step (issue 14): RestoreDatabase and RestoreLibrary check their start token
 * with the authorizeRun activity before anything else and keep the approval commitment it returns;
 * WeeklyLibraryMirror does the same when it deletes or approves rewrites. Runs from before skip it,
 * and a restore among them can no longer be approved (no commitment): it ends at its approval
 * deadline with nothing changed. Replayed by *.before-authorize-destructive-runs.json (recorded at
 * ba3cd20, the commit before 6c57af4 added it). May be deprecated once no RestoreDatabase,
 * RestoreLibrary or WeeklyLibraryMirror open run started before issue 14's release (commit f02674b)
 * was deployed, and a week (the mirror's schedule) passed.
 */
export const AUTHORIZATION_PATCH = 'authorize-destructive-runs';

/**
 * The versioned library mirror (issue 16): WeeklyLibraryMirror names a version set, refuses a mass
 * rewrite until approved, keeps what rsync overwrites or deletes, records the pairing with the
 * newest dump, prunes expired version sets and may copy the library to the NAS. Runs from before
 * mirror as they did. Replayed by *.before-library-versions.json (recorded at f02674b). May be
 * deprecated once no WeeklyLibraryMirror open run started before the first release with commit
 * 49513ca (which added it) was deployed, and a week (the mirror's schedule) passed.
 */
export const LIBRARY_VERSIONS_PATCH = 'library-versions';

/**
 * The drill of the offsite copy (issue 25): after the local part, with the database lock released,
 * RestoreDrill runs drillNasCopy (the newest NAS copy fetched, decrypted, verified and restored, or
 * returned undefined when drill.offsiteCopy is off) and fails when that copy does. Runs from before
 * drill the local dump only. Replayed by replay-restore-drill.before-drill-offsite-copy.json. May be
 * deprecated once no RestoreDrill open run started before the first release with this patch was
 * deployed (a drill runs for hours at most).
 */
export const OFFSITE_DRILL_PATCH = 'drill-offsite-copy';
