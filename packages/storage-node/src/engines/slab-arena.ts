/**
 * Compact storage for the memory engine: keys, values, versions and the key index, all in typed
 * arrays, so that every byte a key costs is a byte the arena counts.
 *
 * One `Uint8Array` per value costs ~100 bytes of V8 object headers and backing-store
 * bookkeeping on top of the payload, and a `Map` keyed by strings costs a string object plus a
 * hash table entry per key on the V8 heap, where the cap can only model it (and the heap's own
 * slack comes on top). Instead, each entry's key and value are copied together into one item of a
 * large slab buffer partitioned into fixed-size items per size class (jemalloc-style classes:
 * 8-byte steps up to 128 B, then 8 classes per doubling up to 64 KiB, so internal waste is at most
 * 12.5%), and the index is an open-addressing hash table of handles in an `Int32Array`. A handle
 * is a small integer naming the entry's metadata in parallel typed arrays.
 *
 * Space is reclaimed without compaction pauses: freed items go on their class's free list and are
 * reused by the next allocation of that class, so a steady overwrite/delete loop never grows the
 * arena. When a class becomes completely empty its slabs are released; with eviction on, the last
 * slab of a class can also be emptied (its values evicted) and released, so that space moves to
 * the size class that needs it.
 */

/** Size of one slab buffer. Small enough that an idle class wastes little, big enough that slab count stays low. */
const SLAB_BYTES = 256 * 1024;
/** Largest item stored in slabs; bigger entries get their own buffer (the header overhead is then negligible). */
const MAX_SLAB_ITEM = 64 * 1024;

/** Sorted item sizes of the size classes; class 0 (empty) is never used, keys have at least one byte. */
const CLASS_SIZES: Uint32Array = buildClassSizes();
/** Class id of entries larger than {@link MAX_SLAB_ITEM}. */
const HUGE_CLASS = CLASS_SIZES.length;
/**
 * Class id of a tombstone: a handle that keeps a key and a version but no value. Its key lives in
 * a separate set of size classes, so that value slabs hold nothing that cannot be evicted.
 */
const TOMBSTONE_CLASS = HUGE_CLASS + 1;

function buildClassSizes(): Uint32Array {
  const sizes = [0];
  for (let size = 8; size <= 128; size += 8) sizes.push(size);
  for (let base = 128; base < MAX_SLAB_ITEM; base *= 2) {
    const step = base / 8;
    for (let k = 1; k <= 8; k++) sizes.push(base + k * step);
  }
  return Uint32Array.from(sizes);
}

/** Smallest class whose items hold `length` bytes. */
function classFor(length: number): number {
  if (length <= 128) return (length + 7) >>> 3;
  if (length > MAX_SLAB_ITEM) return HUGE_CLASS;
  let lo = 17;
  let hi = CLASS_SIZES.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (CLASS_SIZES[mid]! >= length) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The arena's running total of bytes held (slabs, huge entries, metadata, index, free lists,
 * eviction order), kept by every structure as it grows or shrinks, so the memory cap is checked
 * in O(1) per write.
 */
interface Reserved {
  bytes: number;
}

/** A stack of uint32 that grows by doubling; used for free lists. */
class U32Stack {
  private items = new Uint32Array(16);
  /** Number of items on the stack. */
  size = 0;

  constructor(private readonly reserved: Reserved) {
    reserved.bytes += this.items.byteLength;
  }

  push(value: number): void {
    if (this.size === this.items.length) {
      this.reserved.bytes += this.items.byteLength;
      this.items = grow(this.items, this.size * 2);
    }
    this.items[this.size++] = value;
  }

  /** Pops the top item; callers check `size` first. */
  pop(): number {
    return this.items[--this.size]!;
  }

  /** Drops every item not below `limit` (O(size)). */
  keepBelow(limit: number): void {
    let kept = 0;
    for (let i = 0; i < this.size; i++) {
      const item = this.items[i]!;
      if (item < limit) this.items[kept++] = item;
    }
    this.size = kept;
  }
}

function grow<T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(
  array: T,
  length: number,
): T {
  const next = new (array.constructor as new (length: number) => T)(length);
  next.set(array);
  return next;
}

/** Items of one size, carved out of slabs on demand. */
class SizeClass {
  readonly itemsPerSlab: number;
  /** Bytes of one slab of this class: a whole number of items, at most {@link SLAB_BYTES}. */
  readonly slabBytes: number;
  slabs: Uint8Array[] = [];
  private readonly free: U32Stack;
  /** Items ever handed out since the class was last emptied; new items are carved from here. */
  private carved = 0;
  /** Items currently in use. */
  live = 0;
  /** With eviction: the handle owning each item (-1: free), to empty a slab. */
  owners: Int32Array | undefined;

  constructor(
    readonly itemSize: number,
    private readonly reserved: Reserved,
    trackOwners: boolean,
  ) {
    this.itemsPerSlab = itemSize === 0 ? 0 : Math.max(1, Math.floor(SLAB_BYTES / itemSize));
    this.slabBytes = this.itemsPerSlab * itemSize;
    this.free = new U32Stack(reserved);
    if (trackOwners) this.owners = new Int32Array(0);
  }

  /** Bytes one more item would newly reserve: a slab (and owner entries) when no free or carved item is left. */
  get growth(): number {
    if (this.free.size > 0 || this.carved < this.slabs.length * this.itemsPerSlab) return 0;
    const owners = this.owners;
    const needed = (this.slabs.length + 1) * this.itemsPerSlab;
    const ownerGrowth =
      owners === undefined || owners.length >= needed
        ? 0
        : (Math.max(needed, owners.length * 2) - owners.length) * 4;
    return this.slabBytes + ownerGrowth;
  }

  /** Bytes of slabs held. */
  get slabBytesHeld(): number {
    return this.slabs.length * this.slabBytes;
  }

  allocate(owner: number): number {
    this.live++;
    let index: number;
    if (this.free.size > 0) {
      index = this.free.pop();
    } else {
      index = this.carved++;
      if (index >= this.slabs.length * this.itemsPerSlab) this.addSlab();
    }
    if (this.owners !== undefined) this.owners[index] = owner;
    return index;
  }

  private addSlab(): void {
    this.slabs.push(new Uint8Array(this.slabBytes));
    this.reserved.bytes += this.slabBytes;
    const owners = this.owners;
    const needed = this.slabs.length * this.itemsPerSlab;
    if (owners !== undefined && owners.length < needed) {
      const next = new Int32Array(Math.max(needed, owners.length * 2)).fill(-1);
      next.set(owners);
      this.reserved.bytes += next.byteLength - owners.byteLength;
      this.owners = next;
    }
  }

  release(index: number): void {
    this.live--;
    if (this.owners !== undefined) this.owners[index] = -1;
    if (this.live === 0) {
      // The whole class is empty: hand its slabs back to the GC instead of keeping them for a
      // size that may never be used again (e.g. after a bulk delete of one value shape).
      this.reserved.bytes -= this.slabBytesHeld;
      this.slabs = [];
      this.carved = 0;
      this.free.size = 0;
      return;
    }
    this.free.push(index);
  }

  /** Handles owning an item of the last slab (eviction on); empty when the class has no slab. */
  lastSlabOwners(): number[] {
    const owners = this.owners;
    const found: number[] = [];
    if (owners === undefined || this.slabs.length === 0) return found;
    const start = (this.slabs.length - 1) * this.itemsPerSlab;
    const end = Math.min(this.carved, start + this.itemsPerSlab);
    for (let index = start; index < end; index++) if (owners[index]! >= 0) found.push(owners[index]!);
    return found;
  }

  /** Releases the last slab once its items are all free (see {@link SizeClass.lastSlabOwners}). */
  releaseLastSlab(): void {
    if (this.slabs.length === 0) return;
    this.slabs.pop();
    this.reserved.bytes -= this.slabBytes;
    const limit = this.slabs.length * this.itemsPerSlab;
    if (this.carved > limit) this.carved = limit;
    this.free.keepBelow(limit);
  }

  slabOf(index: number): Uint8Array {
    return this.slabs[Math.floor(index / this.itemsPerSlab)]!;
  }

  offsetOf(index: number): number {
    return (index % this.itemsPerSlab) * this.itemSize;
  }
}

/** Entries bigger than a slab item: one buffer each, indexes recycled through a free list. */
class HugeValues {
  values: (Uint8Array | undefined)[] = [];
  private readonly free: U32Stack;
  bytes = 0;
  live = 0;

  constructor(private readonly reserved: Reserved) {
    this.free = new U32Stack(reserved);
  }

  store(bytes: Uint8Array): number {
    this.bytes += bytes.byteLength;
    this.reserved.bytes += bytes.byteLength;
    this.live++;
    const index = this.free.size > 0 ? this.free.pop() : this.values.length;
    this.values[index] = bytes;
    return index;
  }

  release(index: number): void {
    this.bytes -= this.values[index]!.byteLength;
    this.reserved.bytes -= this.values[index]!.byteLength;
    this.live--;
    this.values[index] = undefined;
    this.free.push(index);
  }
}

/** Space accounting of a {@link SlabArena}. */
export interface SlabArenaStats {
  /** Handles currently allocated (values and tombstones). */
  readonly values: number;
  /** Sum of the lengths of the stored values (keys excluded). */
  readonly liveBytes: number;
  /** Bytes of buffers held by the arena (slabs, huge entries, metadata, index, free lists, eviction order). */
  readonly reservedBytes: number;
}

/**
 * Bytes of metadata per handle: class (1), item index (4), value length (4), key length (2),
 * writeEpoch (4), version (8: a float64, exact for every integer below 2^53), key hash (4),
 * expiry time (8: ms since the Unix epoch as a float64; 0 = none).
 */
export const SLOT_METADATA_BYTES = 35;
/** Bytes of eviction order per handle: the previous and next handle of its class's list. */
export const EVICTION_ORDER_BYTES = 8;
/** Random handles tried by `allkeys-random` before it falls back to the oldest value of the class. */
const RANDOM_SAMPLES = 16;
/**
 * Most values an eviction with a filter examines from the old end of a class (see
 * {@link SlabArena.victimFor}). A factor-3 member heads about a third of what it holds, but its
 * old end can hold mostly other heads' keys (its order counts the reads it serves as a tail, which
 * their heads never see): 64 left a small member refusing writes, 256 did not (at most ~80 µs).
 */
const EVICTION_WALK = 256;
const INITIAL_SLOTS = 1024;
const INITIAL_BUCKETS = 2048;
const EMPTY_BUCKET = -1;

/**
 * Stores entries (a key with a value, or a tombstone: a key with no value) under integer handles,
 * each with a version (writeEpoch: uint32, version: below 2^53), and finds them by key. Handles are small
 * non-negative integers that stay valid until {@link SlabArena.free}; views returned by
 * {@link SlabArena.read} and {@link SlabArena.key} alias arena memory and are only valid until the
 * next mutation of the arena.
 */
export class SlabArena {
  private readonly reserved: Reserved = { bytes: 0 };
  private readonly classes: SizeClass[];
  /** Size classes of tombstones' keys: never evicted, so kept out of the value slabs. */
  private readonly tombstoneClasses: SizeClass[];
  private readonly huge = new HugeValues(this.reserved);
  // Per-handle metadata in parallel typed arrays (SLOT_METADATA_BYTES per handle), no JS objects.
  // The version lives here rather than in the item so that reads stay a plain view of the value.
  private slotClass = new Uint8Array(INITIAL_SLOTS);
  private slotIndex = new Uint32Array(INITIAL_SLOTS);
  private slotLength = new Uint32Array(INITIAL_SLOTS);
  /** 0 marks a free handle (keys have at least one byte). */
  private slotKeyLength = new Uint16Array(INITIAL_SLOTS);
  private slotEpoch = new Uint32Array(INITIAL_SLOTS);
  private slotVersion = new Float64Array(INITIAL_SLOTS);
  private slotExpire = new Float64Array(INITIAL_SLOTS);
  private slotHash = new Uint32Array(INITIAL_SLOTS);
  private readonly freeSlots = new U32Stack(this.reserved);
  private nextSlot = 0;
  /** The key index: open addressing, linear probing, handles (or EMPTY_BUCKET); load at most 3/4. */
  private buckets = new Int32Array(INITIAL_BUCKETS).fill(EMPTY_BUCKET);
  private mask = INITIAL_BUCKETS - 1;
  private live = 0;
  private liveBytes = 0;
  /** Per-arena hash seed: keys come from clients, so their bucket must not be predictable. */
  private readonly seed = (Math.random() * 0x1_0000_0000) >>> 0;
  /** Eviction order of the values (not tombstones) of each class, when eviction is on. */
  private readonly order: EvictionOrder | undefined;
  // Where the last `locate` found a handle's item (scratch fields: no tuple per lookup).
  private itemBytes: Uint8Array = new Uint8Array(0);
  private itemOffset = 0;

  constructor(options: { evictionOrder?: boolean } = {}) {
    const evicting = options.evictionOrder === true;
    this.classes = Array.from(CLASS_SIZES, (size) => new SizeClass(size, this.reserved, evicting));
    this.tombstoneClasses = Array.from(CLASS_SIZES, (size) => new SizeClass(size, this.reserved, false));
    this.reserved.bytes += INITIAL_SLOTS * SLOT_METADATA_BYTES + this.buckets.byteLength;
    if (evicting) {
      this.order = new EvictionOrder(INITIAL_SLOTS);
      this.reserved.bytes += this.order.bytes;
    }
  }

  /** Bytes held (slabs, huge entries, metadata, index, free lists): what the memory cap bounds, in O(1). */
  get reservedBytes(): number {
    return this.reserved.bytes;
  }

  /** Number of handles in use (values and tombstones). */
  get size(): number {
    return this.live;
  }

  /** Sum of the values' lengths (as {@link SlabArena.stats}' `liveBytes`, without an object). */
  get valueBytes(): number {
    return this.liveBytes;
  }

  /** One more than the highest handle ever used: iterate `0..handleLimit` with {@link SlabArena.isLive}. */
  get handleLimit(): number {
    return this.nextSlot;
  }

  /** Whether `handle` names an entry. */
  isLive(handle: number): boolean {
    return handle < this.nextSlot && this.slotKeyLength[handle] !== 0;
  }

  /** The handle of the entry (value or tombstone) under `key`, or -1. */
  find(key: Uint8Array): number {
    const hash = this.hash(key);
    const buckets = this.buckets;
    const mask = this.mask;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const handle = buckets[i]!;
      if (handle === EMPTY_BUCKET) return -1;
      if (this.slotHash[handle] === hash && this.keyEquals(handle, key)) return handle;
    }
  }

  /**
   * One step of an iteration over every entry that survives the index growing between steps:
   * calls `visit` with the handle of each entry (value or tombstone) whose home bucket is
   * `cursor`, and returns the next cursor, 0 once every bucket was visited. Start from 0.
   *
   * Buckets are visited in reverse-binary order (Redis's SCAN argument): the cursor's bits are
   * incremented from the top, so when the index doubles between two steps, the buckets a smaller
   * index already covered are exactly the ones the larger index's cursor has passed, and none is
   * skipped (some may be visited twice). With linear probing an entry lies in the run of occupied
   * buckets that starts at its home bucket, so a step walks that run only: O(run length).
   * `visit` must not mutate the arena.
   */
  scanStep(cursor: number, visit: (handle: number) => void): number {
    const buckets = this.buckets;
    const mask = this.mask;
    const home = cursor & mask;
    for (let i = home; buckets[i] !== EMPTY_BUCKET; i = (i + 1) & mask) {
      const handle = buckets[i]!;
      if ((this.slotHash[handle]! & mask) === home) visit(handle);
    }
    return nextReverseBinary(cursor, mask);
  }

  /** The key of the entry under `handle`, as a view into arena memory (valid until the next mutation). */
  key(handle: number): Uint8Array {
    this.locate(handle);
    return this.itemBytes.subarray(this.itemOffset, this.itemOffset + this.slotKeyLength[handle]!);
  }

  /** Length of the key under `handle`. */
  keyLength(handle: number): number {
    return this.slotKeyLength[handle]!;
  }

  /**
   * Bytes storing a value of `length` under a key of `keyLength` would newly reserve: a slab when
   * its class has no free or carved item left, the entry itself when huge, and for a new handle
   * (`newHandle`) the doubling of the metadata arrays when none is free and of the index when it
   * would pass its load.
   */
  growthFor(keyLength: number, length: number, newHandle: boolean): number {
    const cls = classFor(keyLength + length);
    let bytes = cls === HUGE_CLASS ? keyLength + length : this.classes[cls]!.growth;
    if (newHandle) bytes += this.handleGrowth();
    return bytes;
  }

  /**
   * Bytes `count` new handles would newly reserve: the doublings of the metadata arrays (when no
   * freed handle is left) and of the index (past its load) they would cause.
   */
  handlesGrowth(count: number): number {
    let bytes = 0;
    const perHandle = SLOT_METADATA_BYTES + (this.order === undefined ? 0 : EVICTION_ORDER_BYTES);
    const handles = this.nextSlot + Math.max(0, count - this.freeSlots.size);
    for (let capacity = this.slotClass.length; handles > capacity; capacity *= 2)
      bytes += capacity * perHandle;
    for (let buckets = this.buckets.length; (this.live + count) * 4 > buckets * 3; buckets *= 2)
      bytes += buckets * 4;
    return bytes;
  }

  private handleGrowth(): number {
    return this.handlesGrowth(1);
  }

  /**
   * A value to evict so that an entry of `total` bytes (key + value) finds room in its own size
   * class: one of that class (whose item the new entry can then take; for huge entries any huge
   * one, whose bytes are released), never `exclude`, and only one `accept` takes when given (a
   * replicating node evicts only the keys whose chains it heads). `lru`: the least recently used
   * (reads and writes count as uses, see {@link SlabArena.touch}); otherwise a random one
   * (sampled; when sampling misses, the oldest written). -1 when the class holds no other value
   * (with `accept`: none it takes among the {@link EVICTION_WALK} oldest and a sample).
   * `rotateRefused`: the values `accept` refuses on the walk go to the young end, so the next walk
   * does not examine them again (for values this node never evicts: other heads' keys).
   */
  victimFor(
    total: number,
    lru: boolean,
    exclude: number,
    accept?: (handle: number) => boolean,
    rotateRefused = false,
  ): number {
    const order = this.order;
    if (order === undefined) return -1;
    const cls = classFor(total);
    if (!lru) {
      const sampled = this.sampleVictim(cls, exclude, accept, RANDOM_SAMPLES);
      if (sampled >= 0) return sampled;
    }
    const oldest = order.oldest(cls, exclude, accept, rotateRefused);
    // With a filter, when the old end holds only values it refuses (keys of other heads or other
    // write paths, not written for long), a sampled one it takes rather than none.
    return oldest < 0 && accept !== undefined
      ? this.sampleVictim(cls, exclude, accept, EVICTION_WALK)
      : oldest;
  }

  /** A value of class `cls` found among `samples` random handles (not `exclude`, taken by `accept`), or -1. */
  private sampleVictim(
    cls: number,
    exclude: number,
    accept: ((handle: number) => boolean) | undefined,
    samples: number,
  ): number {
    const order = this.order!;
    for (let attempt = 0; attempt < samples; attempt++) {
      const slot = Math.floor(Math.random() * this.nextSlot);
      if (
        slot !== exclude &&
        this.slotClass[slot] === cls &&
        order.contains(slot) &&
        (accept === undefined || accept(slot))
      )
        return slot;
    }
    return -1;
  }

  /**
   * The size class to take space from when an entry of `total` bytes finds nothing to evict in its
   * own class: of the other classes holding values, the one holding the most bytes (its last slab,
   * or for huge entries its oldest one, is then evicted: {@link SlabArena.donorVictims}). -1 when
   * no other class holds a value. O(number of classes), only on this path.
   */
  donorFor(total: number): number {
    if (this.order === undefined) return -1;
    const own = classFor(total);
    let best = -1;
    let bestBytes = 0;
    for (let cls = 1; cls < HUGE_CLASS; cls++) {
      const sizeClass = this.classes[cls]!;
      if (cls === own || sizeClass.live === 0) continue;
      if (sizeClass.slabBytesHeld > bestBytes) {
        best = cls;
        bestBytes = sizeClass.slabBytesHeld;
      }
    }
    if (own !== HUGE_CLASS && this.huge.live > 0 && this.huge.bytes > bestBytes) best = HUGE_CLASS;
    return best;
  }

  /**
   * The values to evict from `donor` (see {@link SlabArena.donorFor}) so that it gives space
   * back: every value with an item in its last slab (then call {@link SlabArena.releaseDonorSlab}),
   * or for huge entries the oldest one. At most one slab's items (256 KiB / item size).
   */
  donorVictims(donor: number): number[] {
    if (donor === HUGE_CLASS) {
      const oldest = this.order?.oldest(HUGE_CLASS, -1) ?? -1;
      return oldest < 0 ? [] : [oldest];
    }
    return this.classes[donor]!.lastSlabOwners();
  }

  /** Releases the last slab of `donor` once its values are freed. */
  releaseDonorSlab(donor: number): void {
    if (donor !== HUGE_CLASS) this.classes[donor]!.releaseLastSlab();
  }

  /** Whether a value of `length` can replace the one under `handle` in its own item (no new space). */
  fitsInPlace(handle: number, length: number): boolean {
    const cls = this.slotClass[handle]!;
    return (
      cls !== HUGE_CLASS && cls !== TOMBSTONE_CLASS && classFor(this.slotKeyLength[handle]! + length) === cls
    );
  }

  /** Marks `handle` as just used (allkeys-lru: a read moves the value to the young end). O(1). */
  touch(handle: number): void {
    if (this.slotClass[handle] !== TOMBSTONE_CLASS) this.order?.touch(handle, this.slotClass[handle]!);
  }

  /** Stores `key` (absent: see {@link SlabArena.find}) with a copy of `value` and its version; returns its handle. */
  allocate(key: Uint8Array, value: Uint8Array, writeEpoch = 0, version = 0, expireAt = 0): number {
    const slot = this.takeSlot();
    const hash = this.hash(key);
    this.slotHash[slot] = hash;
    this.slotKeyLength[slot] = key.byteLength;
    this.place(slot, key, value);
    this.setVersion(slot, writeEpoch, version);
    this.slotExpire[slot] = expireAt;
    this.insert(slot, hash);
    return slot;
  }

  /** Stores `key` (absent) as a tombstone with the given version; returns its handle. */
  allocateTombstone(key: Uint8Array, writeEpoch: number, version: number): number {
    const slot = this.takeSlot();
    const hash = this.hash(key);
    this.slotHash[slot] = hash;
    this.slotKeyLength[slot] = key.byteLength;
    this.placeTombstone(slot, key);
    this.setVersion(slot, writeEpoch, version);
    this.slotExpire[slot] = 0;
    this.insert(slot, hash);
    return slot;
  }

  /**
   * Replaces the value (or the tombstone) stored under `handle` and its version. Reuses the item
   * in place when the size class is unchanged, which keeps overwrite-heavy workloads free of
   * allocator churn.
   */
  replace(handle: number, value: Uint8Array, writeEpoch = 0, version = 0, expireAt = 0): void {
    this.setVersion(handle, writeEpoch, version);
    this.slotExpire[handle] = expireAt;
    const cls = this.slotClass[handle]!;
    const keyLength = this.slotKeyLength[handle]!;
    this.liveBytes += value.byteLength - this.slotLength[handle]!;
    if (cls !== HUGE_CLASS && cls !== TOMBSTONE_CLASS && classFor(keyLength + value.byteLength) === cls) {
      this.locate(handle);
      this.itemBytes.set(value, this.itemOffset + keyLength);
      this.slotLength[handle] = value.byteLength;
      this.order?.touch(handle, cls);
      return;
    }
    // Copy into the new item before releasing the old one: the key is read from it and `value`
    // may be a view of it.
    const oldIndex = this.slotIndex[handle]!;
    if (cls !== TOMBSTONE_CLASS) this.order?.unlink(handle, cls);
    this.liveBytes -= value.byteLength;
    this.place(handle, this.key(handle), value);
    this.releaseItem(cls, oldIndex, keyLength);
  }

  /** Turns `handle` into a tombstone with the given version, releasing its value. */
  replaceWithTombstone(handle: number, writeEpoch: number, version: number): void {
    const cls = this.slotClass[handle]!;
    this.setVersion(handle, writeEpoch, version);
    this.slotExpire[handle] = 0;
    if (cls === TOMBSTONE_CLASS) return;
    const index = this.slotIndex[handle]!;
    this.liveBytes -= this.slotLength[handle]!;
    this.order?.unlink(handle, cls);
    this.placeTombstone(handle, this.key(handle));
    this.releaseItem(cls, index, 0);
  }

  /** Whether `handle` is a tombstone. */
  isTombstone(handle: number): boolean {
    return this.slotClass[handle] === TOMBSTONE_CLASS;
  }

  /** writeEpoch of the entry under `handle`. */
  writeEpoch(handle: number): number {
    return this.slotEpoch[handle]!;
  }

  /** Version of the entry under `handle`. */
  version(handle: number): number {
    return this.slotVersion[handle]!;
  }

  /** Expiry time of the entry under `handle` (ms since the Unix epoch; 0 = none, and for tombstones). */
  expireAt(handle: number): number {
    return this.slotExpire[handle]!;
  }

  /** Changes the version and expiry time of the value under `handle`, keeping the value. */
  restamp(handle: number, writeEpoch: number, version: number, expireAt: number): void {
    this.setVersion(handle, writeEpoch, version);
    this.slotExpire[handle] = expireAt;
  }

  /**
   * The value stored under `handle`, as a view into arena memory (valid until the next
   * mutation). An empty view for a tombstone.
   */
  read(handle: number): Uint8Array {
    if (this.slotClass[handle] === TOMBSTONE_CLASS) return this.itemBytes.subarray(0, 0);
    this.locate(handle);
    const start = this.itemOffset + this.slotKeyLength[handle]!;
    return this.itemBytes.subarray(start, start + this.slotLength[handle]!);
  }

  /** Length in bytes of the value under `handle`. */
  length(handle: number): number {
    return this.slotLength[handle]!;
  }

  /** Removes the entry under `handle` from the index and releases its storage; the handle may be reused. */
  free(handle: number): void {
    const cls = this.slotClass[handle]!;
    this.remove(handle);
    this.liveBytes -= this.slotLength[handle]!;
    if (cls !== TOMBSTONE_CLASS) this.order?.unlink(handle, cls);
    this.releaseItem(cls, this.slotIndex[handle]!, this.slotKeyLength[handle]!);
    this.slotKeyLength[handle] = 0;
    this.slotLength[handle] = 0;
    this.slotExpire[handle] = 0;
    this.freeSlots.push(handle);
    this.live--;
  }

  /** Current space accounting. */
  stats(): SlabArenaStats {
    return { values: this.live, liveBytes: this.liveBytes, reservedBytes: this.reserved.bytes };
  }

  /** Seeded FNV-1a over the key's bytes with a murmur3 finaliser (linear probing uses the low bits). */
  private hash(key: Uint8Array): number {
    let h = this.seed ^ 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i]!, 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  private keyEquals(handle: number, key: Uint8Array): boolean {
    const length = key.length;
    if (this.slotKeyLength[handle] !== length) return false;
    this.locate(handle);
    const bytes = this.itemBytes;
    const offset = this.itemOffset;
    for (let i = 0; i < length; i++) if (bytes[offset + i] !== key[i]) return false;
    return true;
  }

  /** Points `itemBytes`/`itemOffset` at the item of `handle` (key first, then the value). */
  private locate(handle: number): void {
    const cls = this.slotClass[handle]!;
    const index = this.slotIndex[handle]!;
    if (cls === HUGE_CLASS) {
      this.itemBytes = this.huge.values[index]!;
      this.itemOffset = 0;
      return;
    }
    const sizeClass =
      cls === TOMBSTONE_CLASS
        ? this.tombstoneClasses[classFor(this.slotKeyLength[handle]!)]!
        : this.classes[cls]!;
    this.itemBytes = sizeClass.slabOf(index);
    this.itemOffset = sizeClass.offsetOf(index);
  }

  private insert(handle: number, hash: number): void {
    this.live++;
    if (this.live * 4 > this.buckets.length * 3) this.growIndex();
    const buckets = this.buckets;
    const mask = this.mask;
    let i = hash & mask;
    while (buckets[i] !== EMPTY_BUCKET) i = (i + 1) & mask;
    buckets[i] = handle;
  }

  /** Takes `handle` out of the index, shifting the following run back (no deletion markers). */
  private remove(handle: number): void {
    const buckets = this.buckets;
    const mask = this.mask;
    let hole = this.slotHash[handle]! & mask;
    while (buckets[hole] !== handle) hole = (hole + 1) & mask;
    for (let j = (hole + 1) & mask; buckets[j] !== EMPTY_BUCKET; j = (j + 1) & mask) {
      const home = this.slotHash[buckets[j]!]! & mask;
      // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      buckets[hole] = buckets[j]!;
      hole = j;
    }
    buckets[hole] = EMPTY_BUCKET;
  }

  private growIndex(): void {
    const old = this.buckets;
    const next = new Int32Array(old.length * 2).fill(EMPTY_BUCKET);
    const mask = next.length - 1;
    for (let i = 0; i < old.length; i++) {
      const handle = old[i]!;
      if (handle === EMPTY_BUCKET) continue;
      let j = this.slotHash[handle]! & mask;
      while (next[j] !== EMPTY_BUCKET) j = (j + 1) & mask;
      next[j] = handle;
    }
    this.reserved.bytes += next.byteLength - old.byteLength;
    this.buckets = next;
    this.mask = mask;
  }

  private place(slot: number, key: Uint8Array, value: Uint8Array): void {
    const keyLength = key.byteLength;
    const total = keyLength + value.byteLength;
    const cls = classFor(total);
    let index: number;
    if (cls === HUGE_CLASS) {
      const bytes = new Uint8Array(total);
      bytes.set(key);
      bytes.set(value, keyLength);
      index = this.huge.store(bytes);
    } else {
      const sizeClass = this.classes[cls]!;
      index = sizeClass.allocate(slot);
      const slab = sizeClass.slabOf(index);
      const offset = sizeClass.offsetOf(index);
      slab.set(key, offset);
      slab.set(value, offset + keyLength);
    }
    this.slotClass[slot] = cls;
    this.slotIndex[slot] = index;
    this.slotLength[slot] = value.byteLength;
    this.liveBytes += value.byteLength;
    this.order?.link(slot, cls);
  }

  private placeTombstone(slot: number, key: Uint8Array): void {
    const sizeClass = this.tombstoneClasses[classFor(key.byteLength)]!;
    const index = sizeClass.allocate(slot);
    sizeClass.slabOf(index).set(key, sizeClass.offsetOf(index));
    this.slotClass[slot] = TOMBSTONE_CLASS;
    this.slotIndex[slot] = index;
    this.slotLength[slot] = 0;
  }

  private setVersion(slot: number, writeEpoch: number, version: number): void {
    this.slotEpoch[slot] = writeEpoch;
    this.slotVersion[slot] = version;
  }

  private releaseItem(cls: number, index: number, keyLength: number): void {
    if (cls === TOMBSTONE_CLASS) this.tombstoneClasses[classFor(keyLength)]!.release(index);
    else if (cls === HUGE_CLASS) this.huge.release(index);
    else this.classes[cls]!.release(index);
  }

  private takeSlot(): number {
    if (this.freeSlots.size > 0) return this.freeSlots.pop();
    const slot = this.nextSlot++;
    if (slot === this.slotClass.length) {
      const capacity = slot * 2;
      this.reserved.bytes += slot * SLOT_METADATA_BYTES;
      if (this.order !== undefined) {
        this.reserved.bytes -= this.order.bytes;
        this.order.grow(capacity);
        this.reserved.bytes += this.order.bytes;
      }
      this.slotClass = grow(this.slotClass, capacity);
      this.slotIndex = grow(this.slotIndex, capacity);
      this.slotLength = grow(this.slotLength, capacity);
      this.slotKeyLength = grow(this.slotKeyLength, capacity);
      this.slotEpoch = grow(this.slotEpoch, capacity);
      this.slotVersion = grow(this.slotVersion, capacity);
      this.slotExpire = grow(this.slotExpire, capacity);
      this.slotHash = grow(this.slotHash, capacity);
    }
    return slot;
  }
}

/** `value`'s 32 bits in reverse order. */
function reverseBits(value: number): number {
  let v = value >>> 0;
  v = ((v >>> 1) & 0x5555_5555) | ((v & 0x5555_5555) << 1);
  v = ((v >>> 2) & 0x3333_3333) | ((v & 0x3333_3333) << 2);
  v = ((v >>> 4) & 0x0f0f_0f0f) | ((v & 0x0f0f_0f0f) << 4);
  v = ((v >>> 8) & 0x00ff_00ff) | ((v & 0x00ff_00ff) << 8);
  return ((v >>> 16) | (v << 16)) >>> 0;
}

/**
 * The cursor after `cursor` for a table of `mask + 1` buckets: the bits above the mask set, the
 * reversed value incremented, reversed back; 0 after the last bucket.
 */
export function nextReverseBinary(cursor: number, mask: number): number {
  const filled = (cursor | ~mask) >>> 0;
  return reverseBits((reverseBits(filled) + 1) >>> 0);
}

const NONE = -1;
const UNLINKED = -2;

/**
 * One doubly linked list of handles per size class, in typed arrays (no object per value): young
 * values at the head, the eviction candidate at the tail. Link, unlink and touch are O(1).
 */
class EvictionOrder {
  private prev: Int32Array;
  private next: Int32Array;
  private readonly head = new Int32Array(TOMBSTONE_CLASS).fill(NONE);
  private readonly tail = new Int32Array(TOMBSTONE_CLASS).fill(NONE);

  constructor(capacity: number) {
    this.prev = new Int32Array(capacity).fill(UNLINKED);
    this.next = new Int32Array(capacity).fill(UNLINKED);
  }

  get bytes(): number {
    return this.prev.byteLength + this.next.byteLength + this.head.byteLength + this.tail.byteLength;
  }

  grow(capacity: number): void {
    const prev = new Int32Array(capacity).fill(UNLINKED);
    const next = new Int32Array(capacity).fill(UNLINKED);
    prev.set(this.prev);
    next.set(this.next);
    this.prev = prev;
    this.next = next;
  }

  contains(slot: number): boolean {
    return this.prev[slot] !== UNLINKED;
  }

  link(slot: number, cls: number): void {
    const first = this.head[cls]!;
    this.prev[slot] = NONE;
    this.next[slot] = first;
    if (first === NONE) this.tail[cls] = slot;
    else this.prev[first] = slot;
    this.head[cls] = slot;
  }

  unlink(slot: number, cls: number): void {
    const before = this.prev[slot]!;
    const after = this.next[slot]!;
    if (before === UNLINKED) return;
    if (before === NONE) this.head[cls] = after;
    else this.next[before] = after;
    if (after === NONE) this.tail[cls] = before;
    else this.prev[after] = before;
    this.prev[slot] = UNLINKED;
    this.next[slot] = UNLINKED;
  }

  touch(slot: number, cls: number): void {
    if (this.head[cls] === slot) return;
    this.unlink(slot, cls);
    this.link(slot, cls);
  }

  /**
   * The tail of the class's list, or the one before it when the tail is `exclude`; -1 if none.
   * With `accept`: the oldest it takes among the {@link EVICTION_WALK} oldest, else -1 (bounded:
   * a write never walks a whole class); `rotate`: each one it refuses moves to the young end.
   */
  oldest(cls: number, exclude: number, accept?: (slot: number) => boolean, rotate = false): number {
    const last = this.tail[cls]!;
    if (accept === undefined) return last === exclude && last !== NONE ? this.prev[last]! : last;
    let slot = last;
    for (let walked = 0; slot !== NONE && walked < EVICTION_WALK; walked++) {
      const younger = this.prev[slot]!;
      if (slot !== exclude) {
        if (accept(slot)) return slot;
        if (rotate) this.touch(slot, cls);
      }
      slot = younger;
    }
    return NONE;
  }
}
