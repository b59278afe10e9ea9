-- wrk script: cycles through a fixed key space, so the cache fills with exactly those keys.
--
--   WRK_PREFIX  path prefix (the origin answers /1k/... and /64k/... with its body)
--   WRK_KEYS    the key space: PREFIX .. 0 .. PREFIX .. (KEYS - 1), spread over the threads

local prefix = os.getenv("WRK_PREFIX") or "/1k/k-"
local keys = tonumber(os.getenv("WRK_KEYS") or "1000") or 1000

local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("thread_id", threads)
end

local counter = -1
request = function()
   counter = counter + 1
   return wrk.format(nil, prefix .. (counter % keys))
end
