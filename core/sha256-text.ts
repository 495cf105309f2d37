// SHA-256 of a string's UTF-8 bytes, as lowercase hex: the approval's validator (workflow code, in
// the sandbox, without node:crypto) compares the hash of the token it is given with the commitment
// the authorization step made. @noble/hashes is audited pure JavaScript that needs nothing from
// Node; its UTF-8 encoder is the TextEncoder the workflow sandbox provides. Pure module.
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';

export const sha256Text = (text: string): string => bytesToHex(sha256(utf8ToBytes(text)));
