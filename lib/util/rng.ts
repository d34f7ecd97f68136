/**
 * Seeded pseudo-random numbers (mulberry32): small, fast, and reproducible across runs and machines.
 * Its state is one 32-bit integer, so it can be saved in a checkpoint and restored exactly.
 *
 * @module
 */

/**
 * A seeded random generator whose full state is {@link Rng.state}.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * rng.next(); // in [0, 1)
 * const copy = new Rng(0); copy.state = rng.state; // continues identically
 * ```
 */
export class Rng {
  /** The generator state; assign it to resume a saved sequence. */
  state: number;
  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new Error(`Rng: seed must be a finite number, got ${seed}`);
    this.state = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  /** Fisher-Yates shuffle in place; returns the array. */
  shuffle<T extends { length: number; [i: number]: unknown }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }
  /** A permutation of 0..n-1 as Int32Array. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }
  /** A new independent generator derived from this one (advances this one by one step). */
  fork(): Rng {
    return new Rng(Math.floor(this.next() * 4294967296));
  }
}
