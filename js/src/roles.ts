/**
 * Part roles (docs/reference/protocol.md §6.3): what a part is in an agent's answer,
 * read from the parameters of its `part_start` mime. Mirrors `unbroken/protocol/roles.py`.
 */

export type Role = "" | "reasoning" | "tool-call" | "tool-result" | "metadata";

/** What a part's start says it is: its role, a tool call's (or result's) tool name and
 * call id, a data component's name. */
export interface PartInfo {
  readonly role: Role;
  readonly tool: string;
  readonly call: string;
  readonly name: string;
}

const ROLES = new Set(["reasoning", "tool-call", "tool-result", "metadata"]);
export const PLAIN: PartInfo = Object.freeze({ role: "", tool: "", call: "", name: "" });

/** The parameters of a mime type, names lowercased, quoted values unescaped (a
 * segment without `=` is skipped; an unclosed quote runs to the end). */
export function mimeParams(mime: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of mime.matchAll(/;([^;=]*)= *(?:"((?:\\[^]?|[^"\\])*)|([^;]*))/g)) {
    const key = m[1].trim().toLowerCase();
    if (key) out[key] = m[2] !== undefined ? m[2].replace(/\\([^])/g, "$1") : m[3].trim();
  }
  return out;
}

const strip = (part: string, prefix: string) =>
  part.startsWith(prefix) && part.length > prefix.length ? part.slice(prefix.length) : part;

/** Read a part's role from its id, kind and mime (also the earlier forms: a json part
 * with `tool` and no role is a tool call; `role=meta` is metadata; a call id from a
 * `tool-<id>` / `result-<id>` part id). */
export function partInfo(part: string, kind: string, mime: string): PartInfo {
  if (!mime.includes(";")) return PLAIN;
  const p = mimeParams(mime);
  let role = p.role === "meta" ? "metadata" : (p.role ?? "");
  const tool = p.tool ?? "";
  if (!role && tool && kind === "json") role = "tool-call";
  if (!ROLES.has(role) || (role === "reasoning" && kind !== "text")) role = "";
  let call = p.call ?? "";
  if (role === "tool-call" && !call) call = strip(part, "tool-");
  else if (role === "tool-result" && !call) call = strip(part, "result-");
  return { role: role as Role, tool, call, name: p.name ?? "" };
}
