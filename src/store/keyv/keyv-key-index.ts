import type Keyv from 'keyv';

/** Ids per chunk: small enough to rewrite on every insert, large enough that 100,000 keys need 100 chunks. */
const CHUNK_SIZE = 1000;

interface ChunkInfo {
  /** Chunk number, part of the chunk's Keyv key. */
  n: number;
  /** The largest id ever appended to the chunk (an upper bound once ids are removed). */
  last: number;
}

interface IndexMeta {
  chunks: ChunkInfo[];
  next: number;
}

/** One key in the index: its id (sort order) and handle (where its record is). */
export type IndexEntry = [id: number, handle: string];

/**
 * An account's key ids in ascending order, kept in Keyv entries of up to 1000 ids, for Keyv
 * adapters without sorted sets. Listing reads only the chunks a page needs. Not atomic: the
 * caller holds the store's lock.
 */
export class KeyvKeyIndex {
  constructor(
    private readonly keyv: Keyv,
    private readonly name: string,
  ) {}

  async add(id: number, handle: string): Promise<void> {
    const meta = await this.meta();
    const lastChunk = meta.chunks.at(-1);
    // Ids only grow, so a new id always belongs at the end of the last chunk.
    const entries = lastChunk ? await this.chunk(lastChunk.n) : [];
    if (lastChunk && entries.length < CHUNK_SIZE) {
      entries.push([id, handle]);
      lastChunk.last = id;
      await this.keyv.set(this.chunkKey(lastChunk.n), entries);
    } else {
      const n = meta.next++;
      meta.chunks.push({ n, last: id });
      await this.keyv.set(this.chunkKey(n), [[id, handle]]);
    }
    await this.keyv.set(this.name, meta);
  }

  async remove(id: number): Promise<void> {
    const meta = await this.meta();
    const position = firstChunkReaching(meta.chunks, id);
    const info = meta.chunks[position];
    if (!info) return;
    const entries = (await this.chunk(info.n)).filter(([entryId]) => entryId !== id);
    if (entries.length > 0) {
      await this.keyv.set(this.chunkKey(info.n), entries);
      return;
    }
    await this.keyv.delete(this.chunkKey(info.n));
    meta.chunks.splice(position, 1);
    await (meta.chunks.length === 0 ? this.keyv.delete(this.name) : this.keyv.set(this.name, meta));
  }

  /** Up to `limit + 1` entries with an id greater than `after`, ascending. */
  async page(after: number, limit: number): Promise<IndexEntry[]> {
    const meta = await this.meta();
    const found: IndexEntry[] = [];
    for (let i = firstChunkReaching(meta.chunks, after + 1); i < meta.chunks.length && found.length <= limit; i++) {
      const info = meta.chunks[i] as ChunkInfo;
      for (const entry of await this.chunk(info.n)) {
        if (entry[0] > after) found.push(entry);
        if (found.length > limit) break;
      }
    }
    return found;
  }

  private async meta(): Promise<IndexMeta> {
    return ((await this.keyv.get(this.name)) as IndexMeta | undefined) ?? { chunks: [], next: 0 };
  }

  private async chunk(n: number): Promise<IndexEntry[]> {
    return ((await this.keyv.get(this.chunkKey(n))) as IndexEntry[] | undefined) ?? [];
  }

  private chunkKey(n: number): string {
    return `${this.name}:${n}`;
  }
}

/** Index of the first chunk whose `last` is ≥ `id`. */
function firstChunkReaching(chunks: ChunkInfo[], id: number): number {
  let low = 0;
  let high = chunks.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if ((chunks[mid] as ChunkInfo).last < id) low = mid + 1;
    else high = mid;
  }
  return low;
}
