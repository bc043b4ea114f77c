# The classic process-pool lesson, unchanged but for its import.
import time
from conveyor import Pool
def wahaha(i):
    time.sleep(1)
    print('*' * i)
if __name__ == '__main__':
    p = Pool(5)
    for i in range(5):
        p.apply_async(func=wahaha, args=(i,))
    p.close()
    p.join()
