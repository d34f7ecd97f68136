/**
 * One entry point for every dataset, with `"auto"`: CIFAR-10 when it is present or can be
 * downloaded, else Fashion-MNIST; the choice and the reason are logged and kept on the dataset.
 *
 * @module
 */
import { join } from "node:path";
import { findCifar10, loadCifar10 } from "./cifar10.ts";
import { CIFAR10_ARCHIVE, CIFAR10_MD5, CIFAR10_URL, downloadCifar10 } from "./cifar10_download.ts";
import { type Dataset, InMemoryDataset, type Split } from "./dataset.ts";
import {
  downloadFashionMnist,
  FASHION_MNIST_SYSTEM_DIR,
  findFashionMnist,
  loadFashionMnist,
} from "./fashion_mnist.ts";
import { loadSynthetic, type LoadSyntheticOptions } from "./synthetic.ts";
import { loadPcam, type LoadPcamOptions } from "./pcam.ts";
import { loadSyntheticHe, type SyntheticHePatchOptions } from "./synthetic_he_patches.ts";

/** Names {@link loadDataset} understands. */
export type DatasetName = "auto" | "cifar10" | "fashion-mnist" | "synthetic" | "synthetic-he" | "pcam";

/** Valid dataset names, for argument validation. */
export const DATASET_NAMES: readonly DatasetName[] = [
  "auto",
  "cifar10",
  "fashion-mnist",
  "synthetic",
  "synthetic-he",
  "pcam",
];

/** Options of {@link loadDataset}. */
export interface LoadDatasetOptions {
  /** Which split (default `"train"`). */
  split?: Split;
  /** Cache root (default `"data"`): CIFAR-10 in `<dataDir>/cifar-10`, Fashion-MNIST in `<dataDir>/fashion-mnist`. */
  dataDir?: string;
  /** Fraction of the training files held out as `"val"` (default 0.1). */
  valFraction?: number;
  /** Seed of the train/val split (default 0: fixed). */
  valSeed?: number;
  /** Keep a class-balanced random subset of this many images (quick runs). */
  subset?: number;
  /** Seed of the subset (default 0). */
  subsetSeed?: number;
  /** Allow downloading CIFAR-10 when it is missing (default true). */
  download?: boolean;
  /** CIFAR-10 archive address and MD5 (defaults: the official ones; tests use a local server). */
  cifarUrl?: string;
  /** Expected MD5 of the archive at `cifarUrl`. */
  cifarMd5?: string;
  /** Folders searched for Fashion-MNIST (default `[<dataDir>/fashion-mnist, /usr/share/datasets/fashion-mnist]`). */
  fashionMnistDirs?: readonly string[];
  /** Base address of the Fashion-MNIST files (default: the upstream one; tests use a local server). */
  fashionMnistUrl?: string;
  /** Options of the synthetic set. */
  synthetic?: LoadSyntheticOptions;
  /** Options of the synthetic H&E patches (cache default `<dataDir>/synthetic-he`). */
  syntheticHe?: SyntheticHePatchOptions;
  /**
   * Options of PatchCamelyon (files in `<dataDir>/pcam`). By default `imageSize` 32 and `limit` twice the
   * subset (else 20000 patches): the train file holds 262144 patches (7 GB).
   */
  pcam?: LoadPcamOptions;
  /** Print the choice (default true). */
  log?: boolean;
  /** Show download progress (default true). */
  progress?: boolean;
}

/**
 * Validates a dataset name, with an error quoting the bad value.
 *
 * @example
 * ```ts
 * parseDatasetName("cifar10"); // "cifar10"
 * ```
 */
export function parseDatasetName(raw: string, source = "dataset"): DatasetName {
  const v = raw.trim().toLowerCase();
  if ((DATASET_NAMES as readonly string[]).includes(v)) return v as DatasetName;
  throw new Error(
    `${source}: unknown dataset "${raw}"; expected one of ${DATASET_NAMES.map((n) => `"${n}"`).join(", ")}`,
  );
}

function withReason(ds: Dataset, reason: string): Dataset {
  const {
    name,
    classes,
    split,
    imageShape,
    mean,
    std,
    images,
    labels,
    source,
    masks,
    patchGrid,
    augmentation,
  } = ds;
  return new InMemoryDataset({
    name,
    classes,
    split,
    imageShape,
    mean,
    std,
    images,
    labels,
    source,
    masks,
    patchGrid,
    augmentation,
    reason,
  });
}

/**
 * Loads a dataset split by name. `"auto"` picks CIFAR-10 when its files are in `<dataDir>/cifar-10`
 * or can be downloaded, else Fashion-MNIST (from `<dataDir>/fashion-mnist` or the Debian package),
 * and says which and why (`dataset.reason`, printed unless `log: false`).
 *
 * @example
 * ```ts
 * const train = await loadDataset("auto", { split: "train", subset: 2000 });
 * console.log(train.name, train.reason);
 * ```
 */
export async function loadDataset(
  name: DatasetName | string,
  options: LoadDatasetOptions = {},
): Promise<Dataset> {
  const which = parseDatasetName(name, "loadDataset");
  const {
    split = "train",
    dataDir = "data",
    valFraction = 0.1,
    valSeed = 0,
    download = true,
    log = true,
    progress = true,
  } = options;
  const cifarDir = join(dataDir, "cifar-10");
  const fmDirs = options.fashionMnistDirs ?? [join(dataDir, "fashion-mnist"), FASHION_MNIST_SYSTEM_DIR];
  let ds: Dataset;
  let reason: string;

  const getCifar = async (): Promise<string> => {
    if (findCifar10(cifarDir)) return `CIFAR-10 found in ${findCifar10(cifarDir)}`;
    const archive = join(cifarDir, CIFAR10_ARCHIVE);
    const haveArchive = await Deno.stat(archive).then(() => true, () => false);
    if (!download && !haveArchive) throw new Error(`CIFAR-10 is not in ${cifarDir} and download is disabled`);
    await downloadCifar10({
      dir: cifarDir,
      url: options.cifarUrl ?? CIFAR10_URL,
      md5: options.cifarMd5 ?? CIFAR10_MD5,
      progress,
      timeoutMs: 15000,
    });
    return haveArchive
      ? `CIFAR-10 extracted from ${archive}`
      : `CIFAR-10 downloaded from ${options.cifarUrl ?? CIFAR10_URL} into ${cifarDir}`;
  };

  const getFm = async (): Promise<{ dir: string; how: string }> => {
    const found = findFashionMnist(fmDirs);
    if (found) return { dir: found, how: `found in ${found}` };
    const dir = join(dataDir, "fashion-mnist");
    if (!download) {
      throw new Error(
        `Fashion-MNIST is not in ${fmDirs.join(" or ")} and download is disabled ` +
          `(apt-get install dataset-fashion-mnist)`,
      );
    }
    await downloadFashionMnist(dir, { url: options.fashionMnistUrl, progress, timeoutMs: 15000 });
    return { dir, how: `downloaded into ${dir}` };
  };

  switch (which) {
    case "cifar10":
      reason = await getCifar();
      ds = loadCifar10({ dir: cifarDir, split, valFraction, valSeed });
      break;
    case "fashion-mnist": {
      const fm = await getFm();
      ds = loadFashionMnist({ dirs: [fm.dir], split, valFraction, valSeed });
      reason = `Fashion-MNIST requested, ${fm.how}`;
      break;
    }
    case "synthetic":
      ds = loadSynthetic({ valFraction, valSeed, ...options.synthetic, split });
      reason = `synthetic set requested (${ds.source})`;
      break;
    case "synthetic-he":
      ds = await loadSyntheticHe({ cacheDir: join(dataDir, "synthetic-he"), ...options.syntheticHe, split });
      reason = `synthetic H&E patches requested (${ds.source})`;
      break;
    case "pcam": {
      const limit = options.pcam?.limit ?? (options.subset ? Math.min(262144, 2 * options.subset) : 20000);
      ds = await loadPcam({ dir: join(dataDir, "pcam"), imageSize: 32, ...options.pcam, limit, split });
      reason = `PatchCamelyon requested (${ds.source})`;
      break;
    }
    case "auto": {
      let cifar: string | undefined, cifarWhy = "";
      try {
        cifar = await getCifar();
      } catch (e) {
        cifarWhy = (e as Error).message;
      }
      if (cifar !== undefined) {
        // Present: problems with the files themselves are errors, not a reason to switch datasets.
        ds = loadCifar10({ dir: cifarDir, split, valFraction, valSeed });
        reason = `auto: ${cifar}`;
        break;
      }
      let fm: { dir: string; how: string };
      try {
        fm = await getFm();
      } catch (e) {
        throw new Error(
          `loadDataset("auto"): no dataset available. CIFAR-10: ${cifarWhy} Fashion-MNIST: ${
            (e as Error).message
          }. ` +
            `Or ask for "synthetic".`,
        );
      }
      ds = loadFashionMnist({ dirs: [fm.dir], split, valFraction, valSeed });
      reason = `auto: Fashion-MNIST ${fm.how}, because CIFAR-10 is not available (${cifarWhy})`;
      break;
    }
  }
  if (options.subset !== undefined && options.subset < ds.size) {
    ds = ds.subset(options.subset, options.subsetSeed ?? 0);
    reason += `; subset of ${options.subset} images (seed ${options.subsetSeed ?? 0})`;
  }
  if (log) console.error(`dataset ${ds.name}/${ds.split}: ${ds.size} images. ${reason}`);
  return withReason(ds, reason);
}
