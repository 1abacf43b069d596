// Served by web (nginx) from its image under a fingerprinted name, like the routine's static files.
document.documentElement.dataset.loaded = "yes";
fetch("/version", {cache: "no-store"})
  .then((r) => r.json())
  .then((v) => { document.getElementById("live").textContent = `${v.release} (${v.revision.slice(0, 12)}) on ${v.host}`; })
  .catch((e) => { document.getElementById("live").textContent = `not reachable (${e})`; });
