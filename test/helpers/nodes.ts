// Starting a test file's node processes side by side.

/**
 * Awaits every start together; each process that did start is in `into` before this returns or
 * throws, so the file's `after` stops it. (With a bare Promise.all, one failed start, e.g. a port
 * taken meanwhile, left the others running unstopped, and their live child processes held the
 * test file open until the whole run was killed.)
 */
export async function startedAll<const P extends readonly Promise<unknown>[]>(
  starts: P,
  into: Awaited<P[number]>[],
): Promise<{ -readonly [K in keyof P]: Awaited<P[K]> }> {
  const settled = await Promise.allSettled(starts);
  for (const s of settled) if (s.status === 'fulfilled') into.push(s.value as Awaited<P[number]>);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof P]: Awaited<P[K]> };
}
