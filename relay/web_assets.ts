/** The web client's files at `/` and `/web/…` of the relay (shared/web_assets.ts). */
import type { Hono } from "hono";
import { WEB_ASSET_PATHS, webAsset } from "../shared/web_assets.ts";
import type { Env } from "./http.ts";

/** Serves the web client's files. */
export function webAssetRoutes(app: Hono<Env>): void {
  for (const path of WEB_ASSET_PATHS) app.get(path, async () => (await webAsset(path))!);
}
