import { createRequire } from 'node:module';
import { join } from 'node:path';
import proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root.js';
import { repoRoot } from '../helpers/paths.js';

// Histories as Temporal's JSON (what `temporal workflow show --output json` and the Web UI's
// download write). Not through the SDK's historyToJSON/historyFromJSON: with this lockfile
// @temporalio/common and @temporalio/proto each get their own copy of protobufjs 8 (7.x is hoisted
// for others), and protojson from common's copy refuses proto's types ("type must be a Type").
// protojson from proto's own copy reads and writes the same format.

/** One file per recorded run, named by its workflow ID. */
export const HISTORIES_DIR = join(repoRoot, 'test', 'replay', 'histories');

type History = proto.temporal.api.history.v1.IHistory;
interface HistoryType {
  fromObject(object: unknown): History;
}
interface ProtoJson {
  toJson(type: HistoryType, message: History): unknown;
  fromJson(type: HistoryType, json: unknown, options: { ignoreUnknownFields: boolean }): History | null;
}

const fromProto = createRequire(createRequire(import.meta.url).resolve('@temporalio/proto'));
const protojson = fromProto('protobufjs/ext/protojson') as ProtoJson;
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): HistoryType }).lookupType('temporal.api.history.v1.History');

export function historyToJson(history: History): unknown {
  return protojson.toJson(historyType, historyType.fromObject(history));
}

export function historyFromJson(json: unknown): History {
  const history = protojson.fromJson(historyType, json, { ignoreUnknownFields: true });
  if (!history?.events?.length) throw new TypeError('not a workflow history: no events');
  return history;
}
